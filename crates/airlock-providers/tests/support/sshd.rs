//! A throwaway OpenSSH server for tests and benchmarks: `sshd -D -e` on a free
//! 127.0.0.1 port, with its own temp folder, host key, `TrustedUserCAKeys`,
//! `RevokedKeys` and `AuthorizedPrincipalsFile`, stopped and deleted on drop.
//! Plus the real `ssh` client to log in with a certificate.
//!
//! Standalone on purpose (std only, no crate of ours): include it with
//! `#[path = ".../airlock-providers/tests/support/sshd.rs"] mod sshd;`.
//!
//! Login user: the user running the test. Under root (the sandbox and CI run as
//! root) sshd runs privileged and `PermitRootLogin prohibit-password` lets the
//! certificate in; as another user sshd runs unprivileged, which can only log
//! in as that same user. The certificate principals that user accepts are the
//! ones given to [`Sshd::start`] (written to its `AuthorizedPrincipalsFile`),
//! so principals need not be Unix login names, as in production.
//! Needs `AIRLOCK_TEST_SSHD` (set by `./scripts/test`), and `ssh` and
//! `ssh-keygen` on PATH.

#![allow(dead_code)]

use std::fs;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How long sshd may take to start listening.
const START_TIMEOUT: Duration = Duration::from_secs(15);

/// The sshd binary from `AIRLOCK_TEST_SSHD`.
pub fn sshd_binary() -> Result<PathBuf, String> {
    match std::env::var_os("AIRLOCK_TEST_SSHD") {
        Some(p) if !p.is_empty() => Ok(PathBuf::from(p)),
        _ => Err(
            "AIRLOCK_TEST_SSHD is not set: run the tests through ./scripts/test \
                  (scripts/setup/sshd.sh installs OpenSSH and sets it), e.g. \
                  ./scripts/test -- cargo test -p airlock-providers --test ssh"
                .into(),
        ),
    }
}

/// A folder under the system temp dir, deleted on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    /// Creates a fresh, private folder named after `label`.
    pub fn new(label: &str) -> Result<TempDir, String> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let path = std::env::temp_dir().join(format!(
            "airlock-{label}-{}-{}-{nanos:x}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        fs::create_dir(&path).map_err(|e| format!("create {}: {e}", path.display()))?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let _ = fs::set_permissions(&path, fs::Permissions::from_mode(0o700));
        }
        Ok(TempDir(path))
    }

    /// The folder.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Runs a command, returning its output or why it could not run / failed.
fn run(cmd: &mut Command) -> Result<Output, String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {cmd:?}: {e}"))?;
    if out.status.success() {
        Ok(out)
    } else {
        Err(format!(
            "{cmd:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// A user key pair made by the real `ssh-keygen`.
pub struct UserKey {
    /// Private key file (mode 600, as ssh demands).
    pub private: PathBuf,
    /// The public key line (what a requester sends to be certified).
    pub public_line: String,
}

impl UserKey {
    /// `ssh-keygen -t TYPE` (e.g. "ed25519", "ecdsa", "rsa") into `dir/name`.
    pub fn generate(dir: &Path, name: &str, key_type: &str) -> Result<UserKey, String> {
        let private = dir.join(name);
        run(Command::new("ssh-keygen")
            .args(["-q", "-t", key_type, "-N", "", "-C", name, "-f"])
            .arg(&private))?;
        let public_line = fs::read_to_string(private.with_extension("pub"))
            .map_err(|e| format!("read {name}.pub: {e}"))?
            .trim()
            .to_string();
        Ok(UserKey {
            private,
            public_line,
        })
    }

    /// Writes a certificate line next to the key as `NAME-LABEL-cert.pub`.
    pub fn write_cert(&self, label: &str, cert_line: &str) -> Result<PathBuf, String> {
        let path = self.private.with_file_name(format!(
            "{}-{label}-cert.pub",
            self.private
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
        ));
        fs::write(&path, format!("{}\n", cert_line.trim()))
            .map_err(|e| format!("write {}: {e}", path.display()))?;
        Ok(path)
    }
}

/// `ssh` options for a scripted client that trusts any host key of a
/// throwaway server and uses only the keys it is given (no agent, no prompts).
pub const CLIENT_OPTIONS: &[&str] = &[
    "-o",
    "IdentitiesOnly=yes",
    "-o",
    "IdentityAgent=none",
    "-o",
    "BatchMode=yes",
    "-o",
    "StrictHostKeyChecking=no",
    "-o",
    "UserKnownHostsFile=/dev/null",
    "-o",
    "GlobalKnownHostsFile=/dev/null",
];

/// A running sshd; stopped and its folder deleted on drop.
pub struct Sshd {
    child: Child,
    port: u16,
    user: String,
    dir: TempDir,
}

impl Sshd {
    /// Starts sshd trusting the CA public key line `ca_public_key`, letting the
    /// current user in with a certificate for any of `principals`. The KRL
    /// starts empty (made by `ssh-keygen -k`); replace it with [`Sshd::set_krl`].
    pub fn start(ca_public_key: &str, principals: &[&str]) -> Result<Sshd, String> {
        let sshd = sshd_binary()?;
        let dir = TempDir::new("sshd")?;
        let d = dir.path();
        let user = current_user()?;
        run(Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-f"])
            .arg(d.join("host_ed25519")))?;
        run(Command::new("ssh-keygen")
            .args(["-q", "-k", "-f"])
            .arg(d.join("revoked.krl")))?;
        write(&d.join("ca.pub"), &format!("{}\n", ca_public_key.trim()))?;
        fs::create_dir(d.join("principals")).map_err(|e| format!("mkdir principals: {e}"))?;
        let mut list = principals.join("\n");
        list.push('\n');
        write(&d.join("principals").join(&user), &list)?;

        let config = d.join("sshd_config");
        let log_path = d.join("sshd.log");
        let mut penalties = true;
        let mut last_error = String::new();
        for _attempt in 0..5 {
            let port = free_port()?;
            write(&config, &sshd_config(d, port, penalties))?;
            if penalties && !accepts_config(&sshd, &config)? {
                // OpenSSH < 9.8 does not know PerSourcePenalties (newer ones
                // would throttle the refused logins tests make on purpose).
                penalties = false;
                write(&config, &sshd_config(d, port, penalties))?;
            }
            let log = fs::File::create(&log_path).map_err(|e| format!("sshd.log: {e}"))?;
            let mut child = Command::new(&sshd)
                .arg("-D")
                .arg("-e")
                .arg("-f")
                .arg(&config)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .map_err(|e| format!("cannot start {}: {e}", sshd.display()))?;
            match wait_listening(&mut child, &log_path) {
                Ok(()) => {
                    return Ok(Sshd {
                        child,
                        port,
                        user,
                        dir,
                    })
                }
                Err(e) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    // The port was taken between our probe and sshd's bind: retry.
                    if !e.contains("Address already in use") {
                        return Err(e);
                    }
                    last_error = e;
                }
            }
        }
        Err(last_error)
    }

    /// The port sshd listens on (127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The login name certificates are tried as.
    pub fn user(&self) -> &str {
        &self.user
    }

    /// Its host key as a `known_hosts` line (`[127.0.0.1]:PORT TYPE KEY`,
    /// what `ssh-keyscan -p PORT 127.0.0.1` prints).
    pub fn known_hosts_line(&self) -> Result<String, String> {
        let key = fs::read_to_string(self.dir().join("host_ed25519.pub"))
            .map_err(|e| format!("read the host key: {e}"))?;
        let mut parts = key.split_whitespace();
        match (parts.next(), parts.next()) {
            (Some(kind), Some(blob)) => Ok(format!("[127.0.0.1]:{} {kind} {blob}\n", self.port)),
            _ => Err(format!("host_ed25519.pub is not a public key line: {key}")),
        }
    }

    /// The server's folder (config, keys, KRL, log).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Replaces the `RevokedKeys` file atomically (sshd reads it at every login).
    pub fn set_krl(&self, krl: &[u8]) -> Result<(), String> {
        let tmp = self.dir().join("revoked.krl.new");
        fs::write(&tmp, krl).map_err(|e| format!("write KRL: {e}"))?;
        fs::rename(&tmp, self.dir().join("revoked.krl")).map_err(|e| format!("install KRL: {e}"))
    }

    /// Runs `command` over ssh with `key` and its certificate `cert`.
    pub fn ssh(&self, key: &Path, cert: &Path, command: &str) -> Result<Output, String> {
        Command::new("ssh")
            .arg("-F")
            .arg("/dev/null")
            .arg("-p")
            .arg(self.port.to_string())
            .arg("-i")
            .arg(key)
            .arg("-o")
            .arg(format!("CertificateFile={}", cert.display()))
            .args(CLIENT_OPTIONS)
            .args([
                "-o",
                "PreferredAuthentications=publickey",
                "-o",
                "LogLevel=ERROR",
                "-o",
                "ConnectTimeout=10",
            ])
            .arg(format!("{}@127.0.0.1", self.user))
            .arg(command)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run ssh: {e}"))
    }

    /// Logs in and runs `echo ok`: Ok(()) when that printed `ok`, otherwise
    /// what ssh said, with the end of sshd's log.
    pub fn login(&self, key: &Path, cert: &Path) -> Result<(), String> {
        let out = self.ssh(key, cert, "echo ok")?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        if out.status.success() && stdout.trim() == "ok" {
            return Ok(());
        }
        Err(format!(
            "ssh exited {} (stdout {:?}): {}\n--- sshd log (end) ---\n{}",
            out.status,
            stdout.trim(),
            String::from_utf8_lossy(&out.stderr).trim(),
            self.log_tail(15)
        ))
    }

    /// sshd's log so far.
    pub fn log(&self) -> String {
        let mut text = String::new();
        if let Ok(mut f) = fs::File::open(self.dir().join("sshd.log")) {
            let _ = f.read_to_string(&mut text);
        }
        text
    }

    /// The last `n` lines of sshd's log.
    pub fn log_tail(&self, n: usize) -> String {
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn sshd_config(dir: &Path, port: u16, penalties: bool) -> String {
    let d = dir.display();
    let mut c = format!(
        "Port {port}\n\
         ListenAddress 127.0.0.1\n\
         HostKey {d}/host_ed25519\n\
         PidFile {d}/sshd.pid\n\
         TrustedUserCAKeys {d}/ca.pub\n\
         RevokedKeys {d}/revoked.krl\n\
         AuthorizedPrincipalsFile {d}/principals/%u\n\
         AuthorizedKeysFile none\n\
         PubkeyAuthentication yes\n\
         PasswordAuthentication no\n\
         KbdInteractiveAuthentication no\n\
         UsePAM no\n\
         StrictModes no\n\
         PermitRootLogin prohibit-password\n\
         MaxStartups 100:30:200\n\
         LogLevel VERBOSE\n"
    );
    if penalties {
        c.push_str("PerSourcePenalties no\n");
    }
    c
}

/// `sshd -t`: false when the config names an option this sshd does not know.
fn accepts_config(sshd: &Path, config: &Path) -> Result<bool, String> {
    let out = Command::new(sshd)
        .arg("-t")
        .arg("-f")
        .arg(config)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {}: {e}", sshd.display()))?;
    if out.status.success() {
        return Ok(true);
    }
    let err = String::from_utf8_lossy(&out.stderr);
    if err.contains("PerSourcePenalties") {
        Ok(false)
    } else {
        Err(format!("sshd -t rejects the test config: {}", err.trim()))
    }
}

fn wait_listening(child: &mut Child, log: &Path) -> Result<(), String> {
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        let text = fs::read_to_string(log).unwrap_or_default();
        if text.contains("Server listening on") {
            return Ok(());
        }
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("sshd exited at start ({status}): {}", text.trim()));
        }
        if Instant::now() > deadline {
            return Err(format!(
                "sshd did not listen within {START_TIMEOUT:?}: {}",
                text.trim()
            ));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn free_port() -> Result<u16, String> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("no free port: {e}"))?;
    l.local_addr()
        .map(|a| a.port())
        .map_err(|e| format!("no free port: {e}"))
}

/// The login name of the user running the tests (what sshd logs in as).
pub fn current_user() -> Result<String, String> {
    let out = run(Command::new("id").arg("-un"))?;
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn write(path: &Path, text: &str) -> Result<(), String> {
    let mut f = fs::File::create(path).map_err(|e| format!("write {}: {e}", path.display()))?;
    f.write_all(text.as_bytes())
        .map_err(|e| format!("write {}: {e}", path.display()))
}
