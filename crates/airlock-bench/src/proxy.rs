//! Tool proxy benchmarks, each next to its peer in the same run:
//! 1. `airlock exec -- true` (allow rule, SQLite store, real CLI binary) vs
//!    running `true` directly: p50/p99 latency and the overhead.
//! 2. `airlock exec` of a tool writing 100 MB to stdout vs the same program
//!    piped directly: throughput.
//! 3. Rule match (1,000 rules, worst case: the last one matches) plus the
//!    rate-limit decision, in process: p99.

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use airlock_core::config::Config;
use anyhow::{anyhow, bail, Context, Result};
use time::OffsetDateTime;

use crate::harness::Server;
use crate::report::{pct, Met, Row};
use crate::util::{percentile, sorted, unique_tag};
use crate::Ctx;

/// Overhead goal for benchmark 1, milliseconds (p50).
const OVERHEAD_GOAL_MS: f64 = 5.0;
/// Throughput goal for benchmark 2 (share of direct).
const THROUGHPUT_GOAL: f64 = 0.5;
/// Bytes the streaming tool writes.
const STREAM_BYTES: u64 = 100 * 1024 * 1024;
/// Rules in the matcher benchmark.
const RULES: usize = 1000;
/// p99 goal for benchmark 3, microseconds.
const DECISION_GOAL_US: f64 = 50.0;

fn find(candidates: &[&str]) -> Result<String> {
    candidates
        .iter()
        .find(|p| Path::new(p).exists())
        .map(|p| p.to_string())
        .ok_or_else(|| anyhow!("none of {candidates:?} exists"))
}

/// Runs all three.
pub fn run(ctx: &Ctx) -> Result<Vec<Row>> {
    let mut rows = vec![];
    let true_bin = find(&["/usr/bin/true", "/bin/true"])?;
    let head_bin = find(&["/usr/bin/head", "/bin/head"])?;
    let dir = ctx.work_dir.join(format!("proxy-{}", unique_tag()));
    std::fs::create_dir_all(&dir)?;
    let catalog = format!(
        r#"[server]
checkpoint_every = 1000

[[tool]]
name = "true"
path = "{true_bin}"
run_as = "server"
[[tool.rule]]
args = []
action = "allow"

[[tool]]
name = "head"
path = "{head_bin}"
run_as = "server"
[[tool.rule]]
args = ["-c", "*", "/dev/zero"]
action = "allow"
"#
    );
    let db = format!("sqlite://{}", dir.join("airlock.db").display());
    let server = Server::start(&catalog, &dir, &db)?;
    let env = [
        ("AIRLOCK_ADDR", format!("http://{}", server.addr)),
        ("AIRLOCK_TOKEN", server.admin_token.clone()),
    ];
    let quick = ctx.quick;
    match overhead(ctx, &env, &true_bin, if quick { 100 } else { 300 }) {
        Ok(r) => rows.extend(r),
        Err(e) => rows.push(Row::failed("airlock exec -- true vs true", &e)),
    }
    match streaming(ctx, &env, &head_bin, if quick { 2 } else { 4 }) {
        Ok(r) => rows.push(r),
        Err(e) => rows.push(Row::failed("airlock exec streaming 100 MB", &e)),
    }
    drop(server);
    rows.push(decision(if quick { 50_000 } else { 200_000 })?);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(rows)
}

fn time_cmd(mut cmd: Command) -> Result<f64> {
    let t = Instant::now();
    let st = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .context("spawn")?;
    let ms = t.elapsed().as_secs_f64() * 1e3;
    if !st.success() {
        bail!("{cmd:?} exited with {st}");
    }
    Ok(ms)
}

fn airlock(ctx: &Ctx, env: &[(&str, String)], args: &[&str]) -> Command {
    let mut c = Command::new(&ctx.airlock_bin);
    c.args(args);
    for (k, v) in env {
        c.env(k, v);
    }
    c
}

fn overhead(ctx: &Ctx, env: &[(&str, String)], true_bin: &str, n: usize) -> Result<Vec<Row>> {
    let (mut direct, mut proxied) = (Vec::with_capacity(n), Vec::with_capacity(n));
    for i in 0..n + 10 {
        // Alternate so drift (caches, the WAL growing) hits both alike.
        let d = time_cmd(Command::new(true_bin))?;
        let p = time_cmd(airlock(ctx, env, &["exec", "--", "true"]))?;
        if i >= 10 {
            direct.push(d);
            proxied.push(p);
        }
    }
    // The same run through the HTTP API from this process: no CLI start-up.
    let agent = ureq::AgentBuilder::new().build();
    let url = format!("{}/api/v1/runs", env[0].1);
    let auth = format!("Bearer {}", env[1].1);
    let mut api = Vec::with_capacity(n);
    for i in 0..n + 10 {
        let t = Instant::now();
        let resp = agent
            .post(&url)
            .set("Authorization", &auth)
            .send_json(serde_json::json!({"tool": "true", "attach": true}))
            .map_err(|e| anyhow!("POST /api/v1/runs: {e}"))?;
        let mut body = Vec::new();
        resp.into_reader().read_to_end(&mut body)?;
        if i >= 10 {
            api.push(t.elapsed().as_secs_f64() * 1e3);
        }
    }
    let a50 = percentile(&sorted(api), 50.0);
    let (direct, proxied) = (sorted(direct), sorted(proxied));
    let (d50, d99) = (percentile(&direct, 50.0), percentile(&direct, 99.0));
    let (p50, p99) = (percentile(&proxied, 50.0), percentile(&proxied, 99.0));
    // The CLI's own start-up, measured the same way, to show where the time goes.
    let mut version = Vec::with_capacity(50);
    for _ in 0..50 {
        version.push(time_cmd(airlock(ctx, env, &["--version"]))?);
    }
    let v50 = percentile(&sorted(version), 50.0);
    let over = p50 - d50;
    Ok(vec![
        Row {
            figure: format!(
                "`airlock exec -- true` (allow rule, SQLite store, {n} runs) vs `true` directly"
            ),
            measured: format!("p50 {p50:.2} ms, p99 {p99:.2} ms"),
            peer: format!("direct: p50 {d50:.2} ms, p99 {d99:.2} ms"),
            ratio: format!("+{over:.2} ms p50"),
            goal: format!("overhead ≤ {OVERHEAD_GOAL_MS:.0} ms p50"),
            met: Met::from(over <= OVERHEAD_GOAL_MS),
        },
        Row::info(
            "of which: starting the `airlock` CLI binary (`airlock --version`)",
            format!("p50 {v50:.2} ms"),
        ),
        Row::info(
            "the same run through the HTTP API without the CLI (POST /api/v1/runs, attach, to the last frame)",
            format!("p50 {a50:.2} ms"),
        ),
    ])
}

/// Reads a child's stdout to the end; returns bytes and seconds.
pub(crate) fn drain(mut cmd: Command) -> Result<(u64, f64)> {
    let t = Instant::now();
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("spawn")?;
    let mut out = child.stdout.take().context("stdout")?;
    let mut buf = vec![0u8; 256 * 1024];
    let mut total = 0u64;
    loop {
        let n = out.read(&mut buf)?;
        if n == 0 {
            break;
        }
        total += n as u64;
    }
    let st = child.wait()?;
    let secs = t.elapsed().as_secs_f64();
    if !st.success() {
        bail!("{cmd:?} exited with {st}");
    }
    Ok((total, secs))
}

fn streaming(ctx: &Ctx, env: &[(&str, String)], head_bin: &str, rounds: usize) -> Result<Row> {
    let count = STREAM_BYTES.to_string();
    let (mut direct, mut proxied) = (Duration::ZERO, Duration::ZERO);
    for _ in 0..rounds {
        let mut c = Command::new(head_bin);
        c.args(["-c", &count, "/dev/zero"]);
        let (n, s) = drain(c)?;
        if n != STREAM_BYTES {
            bail!("direct head wrote {n} bytes");
        }
        direct += Duration::from_secs_f64(s);
        let (n, s) = drain(airlock(
            ctx,
            env,
            &["exec", "--", "head", "-c", &count, "/dev/zero"],
        ))?;
        if n != STREAM_BYTES {
            bail!("airlock exec delivered {n} of {STREAM_BYTES} bytes");
        }
        proxied += Duration::from_secs_f64(s);
    }
    let mb = (STREAM_BYTES * rounds as u64) as f64 / (1024.0 * 1024.0);
    let (d, p) = (mb / direct.as_secs_f64(), mb / proxied.as_secs_f64());
    Ok(Row {
        figure: format!("`airlock exec -- head -c 100M /dev/zero` piped ({rounds} rounds)"),
        measured: format!("{p:.0} MiB/s"),
        peer: format!("`head -c 100M /dev/zero` piped directly: {d:.0} MiB/s"),
        ratio: pct(p, d),
        goal: format!("≥ {:.0}%", THROUGHPUT_GOAL * 100.0),
        met: Met::from(p >= THROUGHPUT_GOAL * d),
    })
}

/// A tool with `RULES` rules; only the last matches the benchmark's arguments.
fn rules_catalog() -> String {
    let mut t = String::from(
        "[[tool]]\nname = \"kubectl\"\npath = \"/usr/local/bin/kubectl\"\nrun_as = \"server\"\n",
    );
    for i in 0..RULES - 1 {
        let action = ["allow", "deny"][i % 2];
        t.push_str(&format!(
            "[[tool.rule]]\nargs = [\"verb{i}\", \"*\", \"-n\", \"*\", \"**\"]\naction = \"{action}\"\n"
        ));
    }
    t.push_str(
        "[[tool.rule]]\nargs = [\"delete\", \"pod\", \"*\", \"-n\", \"*\"]\naction = \"approve\"\n\
         approvals = { count = 1, reviewers = [\"sre\"] }\nrate = \"5/10m\"\n",
    );
    t
}

fn decision(calls: usize) -> Result<Row> {
    let config = Config::parse(&rules_catalog()).map_err(|e| anyhow!("catalog: {e}"))?;
    let tool = config
        .tools
        .values()
        .next()
        .ok_or_else(|| anyhow!("no tool"))?;
    let args: Vec<String> = ["delete", "pod", "web-1", "-n", "payments"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let now = OffsetDateTime::now_utc();
    // Four earlier runs in the window: the fifth is still allowed.
    let events: Vec<OffsetDateTime> = (1..5).map(|m| now - time::Duration::minutes(m)).collect();
    let mut lat = Vec::with_capacity(calls);
    let mut allowed = 0usize;
    for i in 0..calls + 1000 {
        let t = Instant::now();
        let rule = tool.match_rule(std::hint::black_box(&args));
        let ok = rule
            .and_then(|r| r.rate)
            .map(|rate| rate.decide(std::hint::black_box(&events), now))
            .is_some_and(|d| matches!(d, airlock_core::rate::RateDecision::Allow));
        let us = t.elapsed().as_secs_f64() * 1e6;
        if i >= 1000 {
            lat.push(us);
            allowed += usize::from(ok);
        }
    }
    if allowed != calls {
        bail!("the last rule did not match or the rate refused ({allowed} of {calls})");
    }
    let lat = sorted(lat);
    let (p50, p99) = (percentile(&lat, 50.0), percentile(&lat, 99.0));
    Ok(Row {
        figure: format!(
            "rule match ({RULES} rules, last one matches) + rate-limit decision ({calls} calls)"
        ),
        measured: format!("p99 {p99:.2} µs (p50 {p50:.2} µs)"),
        peer: format!("limit: {DECISION_GOAL_US:.0} µs"),
        ratio: format!("{:.0}×", DECISION_GOAL_US / p99),
        goal: format!("p99 ≤ {DECISION_GOAL_US:.0} µs"),
        met: Met::from(p99 <= DECISION_GOAL_US),
    })
}
