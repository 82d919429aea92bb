//! Gateway benchmarks (issue 12), each side by side in one run:
//! 1. TCP bulk throughput through `airlock connect` (the real CLI, a
//!    WebSocket to an in-process server, a TCP relay to the target) next to
//!    the same bytes sent directly and through `socat`;
//! 2. `pgbench -S -c 8` TPS through the gateway with query recording on,
//!    next to the same run straight to PostgreSQL as the same grant role;
//! 4. connect → first query (`psql -c 'select 1'`) through the gateway next
//!    to direct;
//!
//! and the server's RSS with 1,000 idle sessions open.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use serde_json::{json, Value};

use crate::harness::{Api, Server};
use crate::report::{Met, Row};
use crate::util::{mib, percentile, rss_kib, sorted, unique_tag};
use crate::{pg, Ctx};

/// pgbench through the gateway must reach this share of direct TPS.
const PGBENCH_GOAL: f64 = 0.7;
/// Bytes per throughput run.
const BULK: usize = 512 << 20;
/// Idle sessions held open for the RSS figure.
const IDLE_SESSIONS: usize = 1000;
/// Database pgbench runs in (created once, reused).
const BENCH_DB: &str = "airlock_bench_gateway";

/// Runs the gateway benchmarks.
pub fn run(ctx: &Ctx) -> Result<Vec<Row>> {
    let tag = unique_tag();
    let prefix = format!("agw_{tag}_");
    let ent_role = format!("agwrole_{tag}");
    let mut admin = pg::connect(&ctx.pg_url)?;
    pg::create_role(&mut admin, &ent_role)?;
    let result = measure(ctx, &prefix, &ent_role);
    let _ = pg::drop_roles(&mut admin, &prefix, &[]);
    let _ = admin.batch_execute(&format!(
        "DROP OWNED BY \"{ent_role}\"; DROP ROLE IF EXISTS \"{ent_role}\""
    ));
    result
}

/// A sink that reads and discards, counting.
fn sink() -> Result<u16> {
    let l = TcpListener::bind("127.0.0.1:0")?;
    let port = l.local_addr()?.port();
    std::thread::spawn(move || {
        for conn in l.incoming().flatten() {
            std::thread::spawn(move || {
                let mut conn = conn;
                let mut buf = vec![0u8; 256 * 1024];
                while matches!(conn.read(&mut buf), Ok(n) if n > 0) {}
                let _ = conn.write_all(b"k");
            });
        }
    });
    Ok(port)
}

fn catalog(ctx: &Ctx, prefix: &str, ent_role: &str, sink_port: u16) -> String {
    format!(
        r#"{people}
[providers.bench-pg]
kind = "postgres"
url = "{url}"
role_prefix = "{prefix}"
connection_limit = 50

[[entitlement]]
name = "bench-gw-db"
provider = "bench-pg"
role = "{ent_role}"
max_duration = "8h"
access = "both"
approvals = {{ count = 1, reviewers = ["reviewers"] }}

[[entitlement]]
name = "bench-gw-tcp"
provider = "bench-pg"
role = "{ent_role}"
max_duration = "8h"
access = "gateway"
target = "127.0.0.1:{sink_port}"
approvals = {{ count = 1, reviewers = ["reviewers"] }}
"#,
        people = crate::harness::PEOPLE,
        url = ctx.pg_url
    )
}

/// Requests `entitlement` as alice, has bob approve it, waits until active.
pub(crate) fn grant(api: &Api, alice: &str, bob: &str, entitlement: &str) -> Result<String> {
    let r = api.post(
        "/api/v1/requests",
        alice,
        json!({"entitlement": entitlement, "duration": "2h", "reason": "bench"}),
    )?;
    let id = r["id"].as_str().context("request id")?.to_string();
    api.post(
        &format!("/api/v1/requests/{id}/reviews"),
        bob,
        json!({"decision": "approve"}),
    )?;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = api.get(&format!("/api/v1/requests/{id}"), alice)?;
        if r["state"] == "active" {
            return Ok(id);
        }
        if Instant::now() > deadline {
            bail!("grant {id} did not become active: {r}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `airlock connect ID` (the real CLI) on a free loopback port.
struct Connect {
    child: Child,
    port: u16,
}

impl Connect {
    fn start(ctx: &Ctx, server: &Server, token: &str, id: &str) -> Result<Connect> {
        let mut child = Command::new(&ctx.airlock_bin)
            .args(["connect", id, "--output", "json"])
            .env("AIRLOCK_ADDR", format!("http://{}", server.addr))
            .env("AIRLOCK_TOKEN", token)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("start {} connect", ctx.airlock_bin.display()))?;
        let mut line = String::new();
        BufReader::new(child.stdout.take().context("stdout")?).read_line(&mut line)?;
        let v: Value = serde_json::from_str(&line)
            .map_err(|e| anyhow!("airlock connect said {line:?}: {e}"))?;
        let port = v["listen"]
            .as_str()
            .and_then(|a| a.rsplit(':').next())
            .and_then(|p| p.parse().ok())
            .context("listen port")?;
        Ok(Connect { child, port })
    }
}

impl Drop for Connect {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// MB/s of sending `BULK` bytes to 127.0.0.1:`port` and reading the sink's ack.
fn throughput(port: u16) -> Result<f64> {
    let chunk = vec![7u8; 256 * 1024];
    let t = Instant::now();
    let mut c = TcpStream::connect(("127.0.0.1", port))?;
    let mut sent = 0;
    while sent < BULK {
        c.write_all(&chunk)?;
        sent += chunk.len();
    }
    c.shutdown(std::net::Shutdown::Write)?;
    let mut ack = [0u8; 1];
    c.read_exact(&mut ack)?;
    Ok(BULK as f64 / t.elapsed().as_secs_f64() / 1e6)
}

/// `socat` relaying a free port to the sink.
fn socat(sink_port: u16) -> Result<(Child, u16)> {
    let port = crate::util::free_port()?;
    let child = Command::new("socat")
        .arg(format!("TCP-LISTEN:{port},bind=127.0.0.1,reuseaddr,fork"))
        .arg(format!("TCP:127.0.0.1:{sink_port}"))
        .stderr(Stdio::null())
        .spawn()
        .context("start socat (Debian package socat)")?;
    let deadline = Instant::now() + Duration::from_secs(5);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline {
            bail!("socat did not listen");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok((child, port))
}

/// pgbench's TPS and average latency (ms).
fn pgbench(host: &str, port: u16, user: &str, password: &str, secs: u64) -> Result<(f64, f64)> {
    let out = Command::new("pgbench")
        .args(["-n", "-S", "-c", "8", "-j", "2", "-T", &secs.to_string()])
        .args(["-h", host, "-p", &port.to_string(), "-U", user, BENCH_DB])
        .env("PGPASSWORD", password)
        .env("PGSSLMODE", "disable")
        .output()
        .context("run pgbench")?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        bail!("pgbench: {}{}", text, String::from_utf8_lossy(&out.stderr));
    }
    let find = |key: &str| -> Result<f64> {
        text.lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| anyhow!("no `{key}` in pgbench output: {text}"))
    };
    Ok((find("tps = ")?, find("latency average = ")?))
}

/// Milliseconds of `psql -c 'select 1'`, p50 of `n`.
fn psql_p50(host: &str, port: u16, user: &str, password: &str, n: usize) -> Result<f64> {
    let mut v = vec![];
    for _ in 0..n {
        let t = Instant::now();
        let out = Command::new("psql")
            .args(["-X", "-At", "-c", "select 1"])
            .args(["-h", host, "-p", &port.to_string(), "-U", user, BENCH_DB])
            .env("PGPASSWORD", password)
            .env("PGSSLMODE", "disable")
            .output()?;
        if !out.status.success() {
            bail!("psql: {}", String::from_utf8_lossy(&out.stderr));
        }
        v.push(t.elapsed().as_secs_f64() * 1e3);
    }
    Ok(percentile(&sorted(v), 50.0))
}

fn setup_database(ctx: &Ctx, ent_role: &str) -> Result<()> {
    let mut admin = pg::connect(&ctx.pg_url)?;
    let exists = admin
        .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&BENCH_DB])?
        .is_some();
    if !exists {
        admin.batch_execute(&format!("CREATE DATABASE {BENCH_DB}"))?;
    }
    let cfg: postgres::Config = ctx.pg_url.parse()?;
    let host = match cfg.get_hosts().first() {
        Some(postgres::config::Host::Tcp(h)) => h.clone(),
        _ => "127.0.0.1".into(),
    };
    let port = cfg.get_ports().first().copied().unwrap_or(5432);
    let user = cfg.get_user().unwrap_or("postgres").to_string();
    let password = cfg
        .get_password()
        .map(|p| String::from_utf8_lossy(p).into_owned())
        .unwrap_or_default();
    if !exists {
        let out = Command::new("pgbench")
            .args([
                "-i",
                "-q",
                "-s",
                "1",
                "-h",
                &host,
                "-p",
                &port.to_string(),
                "-U",
                &user,
                BENCH_DB,
            ])
            .env("PGPASSWORD", &password)
            .output()?;
        if !out.status.success() {
            bail!("pgbench -i: {}", String::from_utf8_lossy(&out.stderr));
        }
    }
    let mut in_db = cfg.clone();
    in_db.dbname(BENCH_DB);
    let mut db = in_db.connect(postgres::NoTls)?;
    db.batch_execute(&format!(
        "GRANT SELECT ON pgbench_accounts, pgbench_branches, pgbench_tellers TO \"{ent_role}\""
    ))?;
    Ok(())
}

fn measure(ctx: &Ctx, prefix: &str, ent_role: &str) -> Result<Vec<Row>> {
    setup_database(ctx, ent_role)?;
    let sink_port = sink()?;
    let dir = ctx.work_dir.join(format!("gateway-{}", unique_tag()));
    std::fs::create_dir_all(&dir)?;
    let server = Server::start(
        &catalog(ctx, prefix, ent_role, sink_port),
        &dir,
        &format!("sqlite://{}", dir.join("airlock.db").display()),
    )?;
    let api = server.api();
    let alice = api.token_for(&server.admin_token, "alice")?;
    let bob = api.token_for(&server.admin_token, "bob")?;
    let mut rows = vec![];

    // 1. TCP bulk throughput.
    let tcp = grant(&api, &alice, &bob, "bench-gw-tcp")?;
    let gw = Connect::start(ctx, &server, &alice, &tcp)?;
    let (mut socat_child, socat_port) = socat(sink_port)?;
    let (mut direct, mut via_socat, mut via_gw) = (vec![], vec![], vec![]);
    for _ in 0..3 {
        direct.push(throughput(sink_port)?);
        via_socat.push(throughput(socat_port)?);
        via_gw.push(throughput(gw.port)?);
    }
    let _ = socat_child.kill();
    let _ = socat_child.wait();
    let best = |v: &[f64]| v.iter().cloned().fold(0.0, f64::max);
    let (d, s, g) = (best(&direct), best(&via_socat), best(&via_gw));
    rows.push(Row {
        figure: format!(
            "TCP bulk throughput through `airlock connect` ({} MiB, best of 3)",
            BULK >> 20
        ),
        measured: format!("{g:.0} MB/s"),
        peer: format!("socat {s:.0} MB/s; direct {d:.0} MB/s; ssh -L not measured"),
        ratio: format!("{:.0}% of socat", 100.0 * g / s),
        goal: "≥ socat".into(),
        met: Met::from(g >= s),
    });

    // RSS with idle sessions (TCP, so PostgreSQL's connection limit does not bound it).
    let before = rss_kib(None)?;
    let mut idle = vec![];
    for _ in 0..IDLE_SESSIONS {
        idle.push(TcpStream::connect(("127.0.0.1", gw.port))?);
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while server.app.svc.gateway.len() < IDLE_SESSIONS && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    let held = server.app.svc.gateway.len();
    let after = rss_kib(None)?;
    let cli = rss_kib(Some(gw.child.id()))?;
    rows.push(Row::info(
        format!("server RSS with {held} idle gateway sessions (TCP)"),
        format!(
            "{} (+{} over no session, {:.0} KiB per session); airlock connect {}",
            mib(after),
            mib(after.saturating_sub(before)),
            after.saturating_sub(before) as f64 / held.max(1) as f64,
            mib(cli)
        ),
    ));
    drop(idle);
    drop(gw);

    // 2 and 4. PostgreSQL: pgbench and connect → first query, as the same role.
    let db = grant(&api, &alice, &bob, "bench-gw-db")?;
    let creds = api.get(&format!("/api/v1/requests/{db}/credentials"), &alice)?;
    let (user, password) = (
        creds["username"].as_str().context("username")?.to_string(),
        creds["password"].as_str().context("password")?.to_string(),
    );
    let host = creds["host"].as_str().context("host")?.to_string();
    let port = creds["port"].as_u64().context("port")? as u16;
    let gw = Connect::start(ctx, &server, &alice, &db)?;
    let secs = if ctx.quick { 5 } else { 20 };
    pgbench(&host, port, &user, &password, 2)?;
    let (direct_tps, direct_lat) = pgbench(&host, port, &user, &password, secs)?;
    let (gw_tps, gw_lat) = pgbench("127.0.0.1", gw.port, "ignored", "", secs)?;
    let ratio = gw_tps / direct_tps;
    rows.push(Row {
        figure: format!("pgbench -S -c 8 -T {secs} through the gateway, every query recorded"),
        measured: format!(
            "{gw_tps:.0} TPS, latency average {gw_lat:.3} ms (+{:.3} ms per query)",
            gw_lat - direct_lat
        ),
        peer: format!("direct as the same role: {direct_tps:.0} TPS, {direct_lat:.3} ms"),
        ratio: format!("{ratio:.2}×"),
        goal: format!("≥ {PGBENCH_GOAL}×"),
        met: Met::from(ratio >= PGBENCH_GOAL),
    });
    let n = if ctx.quick { 10 } else { 30 };
    let direct_ms = psql_p50(&host, port, &user, &password, n)?;
    let gw_ms = psql_p50("127.0.0.1", gw.port, "ignored", "", n)?;
    rows.push(Row {
        figure: format!("connect → first query: `psql -c 'select 1'`, p50 of {n}"),
        measured: format!("{gw_ms:.1} ms through the gateway"),
        peer: format!("direct {direct_ms:.1} ms"),
        ratio: format!("{:.2}×", gw_ms / direct_ms),
        goal: "–".into(),
        met: Met::Info,
    });
    drop(gw);
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(rows)
}
