//! SSH through the gateway (issue 12, benchmark 3), side by side in one run
//! against one real sshd with the stock OpenSSH client:
//! - interactive echo round trip (one byte to `cat` and back over an open
//!   session), p50, through `ssh -o ProxyCommand='airlock connect ID --stdio'`
//!   next to a direct `ssh` with a certificate for the person's own key;
//! - `head -c 100M` printed through a recorded session next to direct.

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{anyhow, bail, Context, Result};
use serde_json::json;

use crate::harness::Server;
use crate::report::{Met, Row};
use crate::ssh::sshd;
use crate::util::{percentile, sorted, unique_tag};
use crate::Ctx;

/// The gateway may add at most this much to the echo round trip (p50).
const ECHO_GOAL_MS: f64 = 2.0;
/// Bytes printed by the bulk run.
const BULK: u64 = 100 << 20;

/// Runs the SSH gateway benchmark.
pub fn run(ctx: &Ctx) -> Result<Vec<Row>> {
    sshd::sshd_binary().map_err(|e| anyhow!(e))?;
    let dir = ctx.work_dir.join(format!("gateway-ssh-{}", unique_tag()));
    std::fs::create_dir_all(&dir)?;
    let result = measure(ctx, &dir);
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn measure(ctx: &Ctx, dir: &std::path::Path) -> Result<Vec<Row>> {
    let keygen = |name| sshd::UserKey::generate(dir, name, "ed25519").map_err(|e| anyhow!(e));
    let ca = keygen("ssh_ca")?;
    let login = sshd::current_user().map_err(|e| anyhow!(e))?;
    let sshd = sshd::Sshd::start(&ca.public_line, &[&login]).map_err(|e| anyhow!(e))?;
    let known_hosts = dir.join("known_hosts");
    std::fs::write(
        &known_hosts,
        sshd.known_hosts_line().map_err(|e| anyhow!(e))?,
    )?;
    let catalog = format!(
        r#"{people}
[providers.bench-ssh-gw]
kind = "ssh"
ca_key = "{ca}"
known_hosts = "{known_hosts}"

[[entitlement]]
name = "bench-ssh-gw"
provider = "bench-ssh-gw"
principals = ["{login}"]
target_host = "127.0.0.1:{port}"
access = "both"
max_duration = "8h"
approvals = {{ count = 1, reviewers = ["reviewers"] }}
"#,
        people = crate::harness::PEOPLE,
        ca = ca.private.display(),
        known_hosts = known_hosts.display(),
        port = sshd.port()
    );
    let server = Server::start(
        &catalog,
        dir,
        &format!("sqlite://{}", dir.join("airlock.db").display()),
    )?;
    let api = server.api();
    let alice = api.token_for(&server.admin_token, "alice")?;
    let bob = api.token_for(&server.admin_token, "bob")?;
    let id = crate::gateway::grant(&api, &alice, &bob, "bench-ssh-gw")?;

    // Direct: a certificate for alice's own key ("both" allows it).
    let key = keygen("alice")?;
    let creds = api.post(
        &format!("/api/v1/requests/{id}/credentials"),
        &alice,
        json!({"public_key": key.public_line}),
    )?;
    let cert = dir.join("alice-cert.pub");
    std::fs::write(
        &cert,
        format!(
            "{}\n",
            creds["certificate"].as_str().context("certificate")?
        ),
    )?;
    let addr = format!("http://{}", server.addr);
    let direct = |args: &[&str]| -> Command {
        let mut c = Command::new("ssh");
        c.args(common_options())
            .arg("-p")
            .arg(sshd.port().to_string())
            .arg("-i")
            .arg(&key.private)
            .arg("-o")
            .arg(format!("CertificateFile={}", cert.display()))
            .arg(format!("{login}@127.0.0.1"))
            .args(args);
        c
    };
    let gateway = |args: &[&str]| -> Command {
        let mut c = Command::new("ssh");
        c.args(common_options())
            .arg("-o")
            .arg(format!(
                "ProxyCommand={} connect {id} --stdio",
                ctx.airlock_bin.display()
            ))
            .arg("gateway")
            .args(args)
            .env("AIRLOCK_ADDR", &addr)
            .env("AIRLOCK_TOKEN", &alice);
        c
    };

    let mut rows = vec![];
    let n = if ctx.quick { 100 } else { 500 };
    let d = echo_p50(direct(&["cat"]), n)?;
    let g = echo_p50(gateway(&["cat"]), n)?;
    let added = g - d;
    rows.push(Row {
        figure: format!("SSH interactive echo round trip through the gateway, p50 of {n}"),
        measured: format!("{g:.3} ms (+{added:.3} ms)"),
        peer: format!("direct ssh {d:.3} ms"),
        ratio: format!("+{added:.3} ms"),
        goal: format!("≤ +{ECHO_GOAL_MS} ms"),
        met: Met::from(added <= ECHO_GOAL_MS),
    });

    let print = format!("head -c {BULK} /dev/zero | tr '\\0' a");
    let d = bulk_mb_s(direct(&[&print]))?;
    let g = bulk_mb_s(gateway(&[&print]))?;
    rows.push(Row {
        figure: format!(
            "SSH `head -c {}M` printed through a recorded gateway session",
            BULK >> 20
        ),
        measured: format!("{g:.0} MB/s"),
        peer: format!("direct ssh {d:.0} MB/s"),
        ratio: format!("{:.2}×", g / d),
        goal: "–".into(),
        met: Met::Info,
    });
    drop(server);
    Ok(rows)
}

fn common_options() -> impl Iterator<Item = &'static str> {
    [
        "-F",
        "/dev/null",
        "-o",
        "LogLevel=ERROR",
        "-o",
        "Compression=no",
    ]
    .into_iter()
    .chain(sshd::CLIENT_OPTIONS.iter().copied())
}

/// p50 milliseconds of one byte sent to the remote `cat` and read back.
fn echo_p50(mut cmd: Command, n: usize) -> Result<f64> {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .context("start ssh")?;
    let mut input = child.stdin.take().context("stdin")?;
    let mut output = child.stdout.take().context("stdout")?;
    let mut byte = [0u8; 1];
    // Warm up: the login and the first round trips.
    for _ in 0..5 {
        input.write_all(b"x")?;
        input.flush()?;
        output.read_exact(&mut byte)?;
    }
    let mut times = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        input.write_all(b"x")?;
        input.flush()?;
        output.read_exact(&mut byte)?;
        times.push(t.elapsed().as_secs_f64() * 1e3);
    }
    drop(input);
    let _ = child.wait();
    Ok(percentile(&sorted(times), 50.0))
}

/// MB/s of reading everything the remote command prints.
fn bulk_mb_s(mut cmd: Command) -> Result<f64> {
    cmd.stdin(Stdio::null());
    let (total, secs) = crate::proxy::drain(cmd)?;
    if total != BULK {
        bail!("ssh printed {total} of {BULK} bytes");
    }
    Ok(total as f64 / secs / 1e6)
}
