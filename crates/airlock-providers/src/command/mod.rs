//! Generic command provider: for systems without a native adapter, the
//! operator names programs that grant, revoke and list access. Each is run
//! with an argv list (never a shell); placeholders such as `{principal}` are
//! substituted *inside* one argv element, so a value can never add arguments.
//!
//! Exit codes: 0 = done; 75 (`EX_TEMPFAIL`) or a timeout = the target is
//! unreachable, retry later; anything else = refused, with the program's
//! stderr in the message. Programs must be idempotent (revoking an absent
//! grant exits 0), because the reconciler repeats calls after a crash.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use airlock_core::{ProviderName, RequestId};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;
use tokio::io::AsyncReadExt;

use crate::{BuildError, CredentialRequest, GrantSpec, ManagedAccount, Provider, ProviderError};

pub mod config;
pub use config::{Config, Target};

/// How long a program may run when `timeout` is not set.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// Exit code that asks for a retry (sysexits.h `EX_TEMPFAIL`).
pub const EXIT_RETRY: i32 = 75;
/// Most stdout read from a `list` program.
const MAX_STDOUT: usize = 4 << 20;
/// Most stderr kept for an error message.
const MAX_STDERR: usize = 2048;

/// Placeholders a grant or revoke argv may use.
pub const PLACEHOLDERS: &[&str] = &[
    "principal",
    "email",
    "role",
    "entitlement",
    "request_id",
    "not_after",
    "not_after_unix",
    "account",
];

/// The `command` provider.
pub struct CommandProvider {
    name: ProviderName,
    grant: Vec<String>,
    revoke: Vec<String>,
    list: Option<Vec<String>>,
    timeout: Duration,
    cwd: PathBuf,
}

impl CommandProvider {
    /// Checks the argv templates (see [`Config::validate`]); does not run anything.
    pub fn new(name: ProviderName, config: &Config, cwd: &Path) -> Result<Self, BuildError> {
        config.validate().map_err(|e| BuildError::Config {
            provider: name.to_string(),
            detail: e.detail,
        })?;
        let timeout = config
            .timeout
            .map(|s| Duration::from_secs(s.as_secs()))
            .unwrap_or(DEFAULT_TIMEOUT);
        Ok(CommandProvider {
            name,
            grant: config.grant.clone(),
            revoke: config.revoke.clone(),
            list: config.list.clone(),
            timeout,
            cwd: cwd.to_path_buf(),
        })
    }

    fn refused(&self, detail: String) -> ProviderError {
        ProviderError::Refused {
            provider: self.name.to_string(),
            detail,
        }
    }

    fn unreachable(&self, detail: String) -> ProviderError {
        ProviderError::Unreachable {
            provider: self.name.to_string(),
            detail,
        }
    }

    /// Runs `argv` to completion (or its timeout) and returns its stdout.
    async fn run(&self, what: &str, argv: &[String]) -> Result<Vec<u8>, ProviderError> {
        let prog = &argv[0];
        let mut cmd = tokio::process::Command::new(prog);
        cmd.args(&argv[1..])
            .current_dir(&self.cwd)
            // Only what a program needs: airlock's own environment holds
            // database URLs and tokens that must not leak into it.
            .env_clear()
            .env("PATH", "/usr/local/bin:/usr/bin:/bin")
            .env("LANG", "C.UTF-8")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        let mut child = cmd.spawn().map_err(|e| {
            self.refused(format!(
                "{what}: cannot start {prog}: {e} (check the path in [providers.{}])",
                self.name
            ))
        })?;
        let pgid = child.id();
        let mut stdout = child.stdout.take().expect("piped");
        let mut stderr = child.stderr.take().expect("piped");
        let work = async {
            let mut out = Vec::new();
            let mut err = Vec::new();
            let read_out = async {
                (&mut stdout)
                    .take(MAX_STDOUT as u64 + 1)
                    .read_to_end(&mut out)
                    .await
            };
            let read_err = async {
                (&mut stderr)
                    .take(MAX_STDERR as u64 * 4)
                    .read_to_end(&mut err)
                    .await
            };
            let (a, b, status) = tokio::join!(read_out, read_err, child.wait());
            a.and(b).map(|_| ())?;
            status.map(|s| (s, out, err))
        };
        let (status, out, err) = match tokio::time::timeout(self.timeout, work).await {
            Ok(Ok(v)) => v,
            Ok(Err(e)) => return Err(self.unreachable(format!("{what}: {prog}: {e}"))),
            Err(_) => {
                kill_group(pgid);
                return Err(self.unreachable(format!(
                    "{what}: {prog} did not finish within {}s and was killed",
                    self.timeout.as_secs()
                )));
            }
        };
        // A grandchild left running would hold the target in an unknown state.
        kill_group(pgid);
        if out.len() > MAX_STDOUT {
            return Err(self.refused(format!(
                "{what}: {prog} printed more than {} MiB",
                MAX_STDOUT >> 20
            )));
        }
        if status.success() {
            return Ok(out);
        }
        let stderr = String::from_utf8_lossy(&err);
        let stderr: String = stderr.trim().chars().take(MAX_STDERR).collect();
        let code = status
            .code()
            .map_or_else(|| "a signal".to_string(), |c| format!("exit code {c}"));
        let detail = format!("{what}: {prog} failed with {code}: {stderr}");
        if status.code() == Some(EXIT_RETRY) {
            Err(self.unreachable(detail))
        } else {
            Err(self.refused(detail))
        }
    }
}

fn kill_group(pgid: Option<u32>) {
    if let Some(pid) = pgid.and_then(|p| i32::try_from(p).ok()) {
        // SAFETY: killpg only sends a signal; the group is the one we created.
        unsafe {
            libc::killpg(pid, libc::SIGKILL);
        }
    }
}

/// The `{name}` placeholders in one argv element.
fn placeholders(arg: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = arg;
    while let Some(start) = rest.find('{') {
        let after = &rest[start + 1..];
        match after.find('}') {
            Some(end) => {
                out.push(&after[..end]);
                rest = &after[end + 1..];
            }
            None => break,
        }
    }
    out
}

/// Substitutes placeholders inside each element; the argv keeps its length.
pub fn expand(argv: &[String], values: &[(&str, String)]) -> Vec<String> {
    argv.iter()
        .map(|arg| {
            let mut out = String::with_capacity(arg.len());
            let mut rest = arg.as_str();
            while let Some(start) = rest.find('{') {
                out.push_str(&rest[..start]);
                let after = &rest[start + 1..];
                match after.find('}') {
                    Some(end) => {
                        let key = &after[..end];
                        match values.iter().find(|(k, _)| *k == key) {
                            Some((_, v)) => out.push_str(v),
                            None => {
                                out.push('{');
                                out.push_str(key);
                                out.push('}');
                            }
                        }
                        rest = &after[end + 1..];
                    }
                    None => {
                        out.push_str(&rest[start..]);
                        rest = "";
                    }
                }
            }
            out.push_str(rest);
            out
        })
        .collect()
}

/// The entitlement's `role`, if it sets one.
fn role(grant: &GrantSpec) -> Option<&str> {
    use crate::KindTarget;
    Target::of(&grant.target).and_then(|t| t.role.as_deref())
}

fn values(grant: &GrantSpec) -> Vec<(&'static str, String)> {
    let not_after = grant
        .not_after
        .to_offset(time::UtcOffset::UTC)
        .replace_nanosecond(0)
        .unwrap_or(grant.not_after);
    vec![
        ("principal", grant.requester.to_string()),
        ("email", grant.email.clone().unwrap_or_default()),
        ("role", role(grant).unwrap_or_default().to_string()),
        ("entitlement", grant.entitlement.to_string()),
        ("request_id", grant.request_id.to_string()),
        ("not_after", not_after.format(&Rfc3339).unwrap_or_default()),
        (
            "not_after_unix",
            grant.not_after.unix_timestamp().to_string(),
        ),
        ("account", grant.request_id.to_string()),
    ]
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ListedAccount {
    account: String,
    request_id: Option<String>,
}

#[async_trait::async_trait]
impl Provider for CommandProvider {
    fn name(&self) -> &ProviderName {
        &self.name
    }

    fn kind(&self) -> &'static str {
        "command"
    }

    async fn check(&self) -> Result<(), ProviderError> {
        use std::os::unix::fs::PermissionsExt;
        let progs = [Some(&self.grant), Some(&self.revoke), self.list.as_ref()];
        for argv in progs.into_iter().flatten() {
            let prog = &argv[0];
            let meta = tokio::fs::metadata(prog)
                .await
                .map_err(|e| self.refused(format!("{prog}: {e}")))?;
            if !meta.is_file() || meta.permissions().mode() & 0o111 == 0 {
                return Err(self.refused(format!("{prog} is not an executable file")));
            }
        }
        Ok(())
    }

    async fn apply(&self, grant: &GrantSpec) -> Result<(), ProviderError> {
        self.run("grant", &expand(&self.grant, &values(grant)))
            .await
            .map(|_| ())
    }

    async fn remove(&self, grant: &GrantSpec) -> Result<(), ProviderError> {
        self.run("revoke", &expand(&self.revoke, &values(grant)))
            .await
            .map(|_| ())
    }

    async fn list_managed(&self) -> Result<Vec<ManagedAccount>, ProviderError> {
        let Some(list) = &self.list else {
            return Ok(Vec::new());
        };
        let out = self.run("list", list).await?;
        let text =
            String::from_utf8(out).map_err(|_| self.refused("list: output is not UTF-8".into()))?;
        let mut accounts = Vec::new();
        for (n, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let a: ListedAccount = serde_json::from_str(line).map_err(|e| {
                self.refused(format!(
                    "list: line {} is not {{\"account\": \"...\", \"request_id\": \"...\"}}: {e}",
                    n + 1
                ))
            })?;
            if a.account.is_empty() || a.account.len() > 256 || a.account.contains('\0') {
                return Err(self.refused(format!("list: line {}: bad account name", n + 1)));
            }
            let request_id = a
                .request_id
                .as_deref()
                .and_then(|id| RequestId::parse(id).ok());
            accounts.push(ManagedAccount {
                account: a.account,
                request_id,
            });
        }
        Ok(accounts)
    }

    async fn remove_account(&self, account: &str) -> Result<(), ProviderError> {
        // Only the account is known for drift: other placeholders are empty.
        let vals: Vec<(&str, String)> = PLACEHOLDERS
            .iter()
            .map(|p| {
                let v = match *p {
                    "account" => account.to_string(),
                    "request_id" => RequestId::parse(account)
                        .map(|id| id.to_string())
                        .unwrap_or_default(),
                    _ => String::new(),
                };
                (*p, v)
            })
            .collect();
        self.run("revoke", &expand(&self.revoke, &vals))
            .await
            .map(|_| ())
    }

    async fn credentials(
        &self,
        grant: &GrantSpec,
        _request: &CredentialRequest,
    ) -> Result<serde_json::Value, ProviderError> {
        Ok(serde_json::json!({
            "principal": grant.requester,
            "role": role(grant),
            "expires_at": OffsetDateTime::to_offset(grant.not_after, time::UtcOffset::UTC)
                .replace_nanosecond(0)
                .unwrap_or(grant.not_after)
                .format(&Rfc3339)
                .unwrap_or_default(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn expansion_substitutes_inside_one_element_and_keeps_the_length() {
        let vals = [
            ("principal", "alice; rm -rf /".to_string()),
            ("role", "a b".to_string()),
        ];
        let out = expand(
            &argv(&["/bin/x", "--user={principal}", "{role}", "{unknown}", "{"]),
            &vals,
        );
        assert_eq!(
            out,
            argv(&["/bin/x", "--user=alice; rm -rf /", "a b", "{unknown}", "{"])
        );
    }

    #[test]
    fn unknown_placeholders_and_relative_programs_are_refused() {
        let mut c = Config {
            grant: argv(&["/bin/true", "{princpal}"]),
            revoke: argv(&["/bin/true"]),
            ..Default::default()
        };
        let name = ProviderName::parse("cmd").unwrap();
        let err = CommandProvider::new(name.clone(), &c, Path::new("/"))
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains("{princpal}") && err.contains("principal"),
            "{err}"
        );
        c.grant = argv(&["true"]);
        let err = CommandProvider::new(name.clone(), &c, Path::new("/"))
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("absolute"), "{err}");
        c.grant = argv(&["/bin/true"]);
        c.list = Some(argv(&["/bin/true", "{principal}"]));
        assert!(CommandProvider::new(name, &c, Path::new("/")).is_err());
    }
}
