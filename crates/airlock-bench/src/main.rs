//! airlock benchmarks. Every figure is measured next to its peer or limit in
//! the same run, on the same machine; `bench/run` builds and runs this and
//! keeps the table in `bench/out/results.md`.
//!
//! ```text
//! airlock-bench --pg-url URL [--quick] [--airlock-bin PATH] [--work-dir DIR] [--only NAME,...]
//!               [--append-probes BEFORE_BIN,NOW_BIN]
//! airlock-bench --ping-pg URL      exit 0 if PostgreSQL answers
//! ```

mod audit;
mod expiry;
mod gateway;
mod gateway_ssh;
mod gcp;
mod harness;
mod lifecycle;
mod mysql;
mod notify;
mod pg;
mod policy;
mod provider;
mod proxy;
mod report;
mod serve_rss;
mod ssh;
mod util;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::report::Row;

/// Sizes and places shared by all benchmarks.
pub struct Ctx {
    pub pg_url: String,
    pub airlock_bin: PathBuf,
    pub work_dir: PathBuf,
    /// Concurrent HTTP clients (benchmark 1).
    pub clients: usize,
    /// How long the HTTP load runs per store.
    pub load_time: Duration,
    /// How long each raw commit peer runs.
    pub peer_time: Duration,
    /// Active grants (benchmark 2).
    pub grants: usize,
    /// `not_after` spread (benchmark 2).
    pub expiry_window: Duration,
    /// How long after the window to wait for stragglers.
    pub expiry_grace: Duration,
    /// `decide` calls (benchmark 3).
    pub decisions: usize,
    /// Audit events (benchmark 4).
    pub audit_events: usize,
    /// Grant+revoke pairs (benchmark 5).
    pub pairs: usize,
    /// Smaller sizes (`--quick`).
    pub quick: bool,
    /// Append probes built before and after the transparency log
    /// (`bench/append-probes`), for benchmark 4d.
    pub append_probes: Option<(PathBuf, PathBuf)>,
}

impl Ctx {
    fn new(pg_url: String, airlock_bin: PathBuf, work_dir: PathBuf, quick: bool) -> Ctx {
        let pick = |full: usize, small: usize| if quick { small } else { full };
        Ctx {
            pg_url,
            airlock_bin,
            work_dir,
            clients: 8,
            load_time: Duration::from_secs(pick(15, 5) as u64),
            peer_time: Duration::from_secs(pick(5, 2) as u64),
            grants: pick(10_000, 2_000),
            expiry_window: Duration::from_secs(pick(20, 10) as u64),
            expiry_grace: Duration::from_secs(pick(60, 30) as u64),
            decisions: pick(100_000, 20_000),
            audit_events: pick(1_000_000, 100_000),
            pairs: pick(400, 100),
            quick,
            append_probes: None,
        }
    }
}

type Bench = fn(&Ctx) -> Result<Vec<Row>>;

const BENCHES: &[(&str, &str, Bench)] = &[
    // First, so its in-process RSS is not inflated by earlier benchmarks.
    ("expiry", "expiry lag", expiry::run),
    ("policy", "authorization decision latency", policy::run),
    (
        "provider",
        "PostgreSQL provider grant+revoke",
        provider::run,
    ),
    ("mysql", "MariaDB provider grant+revoke", mysql::run),
    (
        "lifecycle",
        "request→approve→active via HTTP",
        lifecycle::run,
    ),
    ("audit", "audit verify --offline", audit::run),
    (
        "gcp",
        "GCP IAM: 20 concurrent grants on one policy",
        gcp::run,
    ),
    (
        "proxy",
        "tool proxy: exec overhead, output streaming, rule match",
        proxy::run,
    ),
    ("serve", "idle RSS of airlock serve", serve_rss::run),
    (
        "gateway",
        "gateway: TCP throughput, pgbench, connect latency, idle sessions",
        gateway::run,
    ),
    ("ssh", "SSH certificate signing and approve→login", ssh::run),
    (
        "gateway-ssh",
        "SSH through the gateway: echo round trip, 100 MB through a recorded session",
        gateway_ssh::run,
    ),
    (
        "notify",
        "signed webhooks: fan-out latency and outbox drain",
        notify::run,
    ),
];

struct Args {
    quick: bool,
    pg_url: Option<String>,
    ping: Option<String>,
    airlock_bin: PathBuf,
    work_dir: PathBuf,
    only: Option<Vec<String>>,
    append_probes: Option<(PathBuf, PathBuf)>,
}

fn parse_args() -> Result<Args> {
    let mut a = Args {
        quick: false,
        pg_url: None,
        ping: None,
        airlock_bin: PathBuf::from("target/release/airlock"),
        work_dir: PathBuf::from("bench/out/work"),
        only: None,
        append_probes: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = || it.next().with_context(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--quick" => a.quick = true,
            "--pg-url" => a.pg_url = Some(value()?),
            "--ping-pg" => a.ping = Some(value()?),
            "--airlock-bin" => a.airlock_bin = value()?.into(),
            "--work-dir" => a.work_dir = value()?.into(),
            "--only" => a.only = Some(value()?.split(',').map(str::to_string).collect()),
            "--append-probes" => {
                let v = value()?;
                let (before, now) = v
                    .split_once(',')
                    .context("--append-probes needs BEFORE_BIN,NOW_BIN")?;
                a.append_probes = Some((before.into(), now.into()));
            }
            other => bail!("unknown argument `{other}` (see the top of src/main.rs)"),
        }
    }
    Ok(a)
}

fn main() -> Result<()> {
    let args = parse_args()?;
    if let Some(url) = args.ping {
        std::process::exit(if pg::ping(&url) { 0 } else { 1 });
    }
    let pg_url = args.pg_url.context("--pg-url is required")?;
    std::fs::create_dir_all(&args.work_dir)?;
    let work_dir = args.work_dir.canonicalize()?;
    let mut ctx = Ctx::new(pg_url, args.airlock_bin, work_dir, args.quick);
    ctx.append_probes = args.append_probes;
    let mut rows = vec![];
    for (name, what, bench) in BENCHES {
        if args
            .only
            .as_ref()
            .is_some_and(|o| !o.iter().any(|x| x == name))
        {
            continue;
        }
        eprintln!("==> {what}");
        let t = Instant::now();
        match bench(&ctx) {
            Ok(r) => rows.extend(r),
            Err(e) => rows.push(Row::failed(what, &e)),
        }
        eprintln!("    done in {:.1} s", t.elapsed().as_secs_f64());
    }
    print!("{}", report::render(&rows));
    Ok(())
}
