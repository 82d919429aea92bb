//! SSH certificate authority benchmarks (issue 4, benchmarks 1 and 2):
//! 1. certificates signed per second in-process (`SshProvider`, the code path
//!    `credentials` runs) next to `ssh-keygen -s` on the same Ed25519 CA key
//!    and the same Ed25519 user key, in the same run;
//! 2. approve → first successful SSH login with the new certificate (HTTP API
//!    of an in-process server, then the real `ssh` client against a real sshd),
//!    p50, next to the same login with a certificate made beforehand (the floor).

#[path = "../../airlock-providers/tests/support/sshd.rs"]
pub(crate) mod sshd;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use airlock_core::{EntitlementName, ProviderName, UserName};
use airlock_providers::ssh::SshProvider;
use airlock_providers::ssh::{Config, Target};
use airlock_providers::EntitlementTarget;
use airlock_providers::{CredentialRequest, GrantSpec};
use anyhow::{anyhow, bail, Context, Result};
use serde_json::json;
use time::OffsetDateTime;

use crate::harness::{Api, Server};
use crate::report::{Met, Row};
use crate::util::{percentile, request_id, sorted, unique_tag};
use crate::Ctx;

/// In-process signing must be at least this many times faster than ssh-keygen.
const SIGN_GOAL: f64 = 20.0;
/// Approve → login p50 may be at most this multiple of a plain certificate login.
const LOGIN_GOAL: f64 = 1.5;
/// Entitlement of the bench catalog.
const ENTITLEMENT: &str = "bench-ssh";
/// Certificate principal sshd accepts.
const PRINCIPAL: &str = "deploy";

/// Runs both benchmarks.
pub fn run(ctx: &Ctx) -> Result<Vec<Row>> {
    sshd::sshd_binary().map_err(|e| anyhow!(e))?;
    let dir = ctx.work_dir.join(format!("ssh-{}", unique_tag()));
    std::fs::create_dir_all(&dir)?;
    let quick = ctx.peer_time < Duration::from_secs(5);
    let mut rows = vec![];
    let figure = "SSH certificates signed/s, in-process (Ed25519 CA, Ed25519 user key)";
    match signing(&dir, ctx.peer_time) {
        Ok(row) => rows.push(Row {
            figure: figure.into(),
            ..row
        }),
        Err(e) => rows.push(Row::failed(figure, &e)),
    }
    let logins = if quick { 10 } else { 30 };
    let figure =
        format!("approve → first SSH login with the new certificate, p50 ({logins} logins)");
    match approve_to_login(&dir, logins) {
        Ok(row) => rows.push(Row { figure, ..row }),
        Err(e) => rows.push(Row::failed(&figure, &e)),
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(rows)
}

fn signing(dir: &Path, time: Duration) -> Result<Row> {
    let sub = dir.join("sign");
    std::fs::create_dir_all(&sub)?;
    let provider = SshProvider::new(
        ProviderName::parse("bench-ssh")?,
        &Config {
            ca_key: "ssh_ca".into(),
            known_hosts: None,
            gateway_host_key: None,
        },
        &airlock_providers::ProviderContext {
            config_dir: sub.clone(),
            data_dir: sub.clone(),
        },
    )
    .map_err(|e| anyhow!(e))?;
    let key = sshd::UserKey::generate(&sub, "user", "ed25519").map_err(|e| anyhow!(e))?;
    let grant = GrantSpec {
        request_id: request_id(),
        requester: UserName::parse("alice")?,
        email: None,
        entitlement: EntitlementName::parse(ENTITLEMENT)?,
        target: EntitlementTarget::Ssh(Target {
            principals: vec![PRINCIPAL.into()],
            extensions: vec!["permit-pty".into()],
            source_address: None,
            force_command: None,
            target_host: None,
        }),
        not_after: OffsetDateTime::now_utc() + time::Duration::hours(1),
        secret: [0; 32],
    };

    // In-process: parse the key, sign, encode the line and the JSON answer.
    let mut serial = 1u64;
    let sign_once = |serial: u64| -> Result<()> {
        let req = CredentialRequest {
            public_key: Some(key.public_line.clone()),
            serial: Some(serial),
        };
        provider
            .certify(&grant, &req, OffsetDateTime::now_utc())
            .map_err(|e| anyhow!("{e}"))?;
        Ok(())
    };
    sign_once(serial)?;
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < time {
        serial += 1;
        sign_once(serial)?;
        n += 1;
    }
    let inproc = n as f64 / start.elapsed().as_secs_f64();

    // ssh-keygen -s with the very same CA key file and user key.
    let pub_path = sub.join("user.pub");
    let keygen = |serial: u64| -> Result<()> {
        let status = Command::new("ssh-keygen")
            .arg("-q")
            .arg("-s")
            .arg(provider.key_path())
            .args([
                "-I",
                "airlock:alice:bench",
                "-n",
                PRINCIPAL,
                "-V",
                "+1h",
                "-z",
            ])
            .arg(serial.to_string())
            .arg(&pub_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output()
            .context("run ssh-keygen")?;
        if !status.status.success() {
            bail!(
                "ssh-keygen -s failed: {}",
                String::from_utf8_lossy(&status.stderr).trim()
            );
        }
        Ok(())
    };
    keygen(1)?;
    let start = Instant::now();
    let mut m = 0u64;
    while start.elapsed() < time {
        m += 1;
        keygen(m + 1)?;
    }
    let peer = m as f64 / start.elapsed().as_secs_f64();
    let ratio = inproc / peer;
    Ok(Row {
        figure: String::new(),
        measured: format!("{inproc:.0} certs/s ({n} in {:.1} s)", time.as_secs_f64()),
        peer: format!("`ssh-keygen -s CA -I id -n p -V +1h -z N key.pub`: {peer:.0} certs/s"),
        ratio: format!("{ratio:.0}×"),
        goal: format!("≥ {SIGN_GOAL:.0}×"),
        met: Met::from(ratio >= SIGN_GOAL),
    })
}

/// alice requests, bob approves, sshd trusts the server's CA for principal `deploy`.
fn catalog() -> String {
    format!(
        r#"{people}
[providers.bench-ssh]
kind = "ssh"
ca_key = "ssh_ca"

[[entitlement]]
name = "{ENTITLEMENT}"
provider = "bench-ssh"
principals = ["{PRINCIPAL}"]
max_duration = "8h"
approvals = {{ count = 1, reviewers = ["reviewers"] }}
"#,
        people = crate::harness::PEOPLE
    )
}

fn approve_to_login(dir: &Path, logins: usize) -> Result<Row> {
    let sub = dir.join("login");
    std::fs::create_dir_all(&sub)?;
    let db = format!("sqlite://{}", sub.join("airlock.db").display());
    let server = Server::start(&catalog(), &sub, &db)?;
    let ca_public = server
        .app
        .provider(&ProviderName::parse("bench-ssh")?)
        .map_err(|e| anyhow!("{e:?}"))?
        .certificate_authority()
        .ok_or_else(|| anyhow!("the ssh provider is not a certificate authority"))?
        .public_key();
    let sshd = sshd::Sshd::start(&ca_public, &[PRINCIPAL]).map_err(|e| anyhow!(e))?;
    let key = sshd::UserKey::generate(&sub, "user", "ed25519").map_err(|e| anyhow!(e))?;
    let api = server.api();
    let alice = api.token_for(&server.admin_token, "alice")?;
    let bob = api.token_for(&server.admin_token, "bob")?;
    let flow = Flow {
        api: &api,
        alice: &alice,
        bob: &bob,
        sshd: &sshd,
        key: &key,
    };

    // Warm-up; its certificate is the pre-made one the floor logs in with.
    let premade = flow.approve_and_login("premade")?.1;
    let mut full = vec![];
    let mut floor = vec![];
    for i in 0..logins {
        // Alternate, so drift on the machine hits both the same way.
        let t = Instant::now();
        sshd.login(&key.private, &premade).map_err(|e| anyhow!(e))?;
        floor.push(t.elapsed().as_secs_f64() * 1e3);
        full.push(flow.approve_and_login(&format!("run{i}"))?.0);
    }
    let (full, floor) = (sorted(full), sorted(floor));
    let (p50, floor50) = (percentile(&full, 50.0), percentile(&floor, 50.0));
    let ratio = p50 / floor50;
    Ok(Row {
        figure: String::new(),
        measured: format!(
            "p50 {p50:.0} ms, p99 {:.0} ms (approve, poll active, POST credentials, write cert, ssh)",
            percentile(&full, 99.0)
        ),
        peer: format!(
            "ssh login with a pre-made certificate: p50 {floor50:.0} ms, p99 {:.0} ms",
            percentile(&floor, 99.0)
        ),
        ratio: format!("{ratio:.2}×"),
        goal: format!("≤ {LOGIN_GOAL}×"),
        met: Met::from(ratio <= LOGIN_GOAL),
    })
}

struct Flow<'a> {
    api: &'a Api,
    alice: &'a str,
    bob: &'a str,
    sshd: &'a sshd::Sshd,
    key: &'a sshd::UserKey,
}

impl Flow<'_> {
    /// Requests (untimed), then times approve → active → certificate → login.
    /// Returns the milliseconds and the certificate file.
    fn approve_and_login(&self, label: &str) -> Result<(f64, std::path::PathBuf)> {
        let r = self.api.post(
            "/api/v1/requests",
            self.alice,
            json!({"entitlement": ENTITLEMENT, "duration": "1h", "reason": "bench"}),
        )?;
        let id = r["id"]
            .as_str()
            .ok_or_else(|| anyhow!("request without id: {r}"))?
            .to_string();
        let t = Instant::now();
        self.api.post(
            &format!("/api/v1/requests/{id}/reviews"),
            self.bob,
            json!({"decision": "approve"}),
        )?;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let r = self
                .api
                .get(&format!("/api/v1/requests/{id}"), self.alice)?;
            match r["state"].as_str() {
                Some("active") => break,
                Some("approved") if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(1))
                }
                other => bail!("request {id} ended as {other:?}: {r}"),
            }
        }
        let c = self.api.post(
            &format!("/api/v1/requests/{id}/credentials"),
            self.alice,
            json!({"public_key": self.key.public_line}),
        )?;
        let line = c["certificate"]
            .as_str()
            .ok_or_else(|| anyhow!("credentials without certificate: {c}"))?;
        let cert = self.key.write_cert(label, line).map_err(|e| anyhow!(e))?;
        self.sshd
            .login(&self.key.private, &cert)
            .map_err(|e| anyhow!(e))?;
        Ok((t.elapsed().as_secs_f64() * 1e3, cert))
    }
}
