//! Benchmark 1: request → approve → active through the real HTTP API with N
//! concurrent clients, on SQLite and on PostgreSQL, next to the store's raw
//! durable single-row commit rate measured in the same run.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use serde_json::json;

use crate::harness::{self, Api, Server, ENTITLEMENT};
use crate::report::{pct, Met, Row};
use crate::util::{percentile, sorted, unique_tag, with_schema};
use crate::{pg, Ctx};

/// Lifecycles per second must reach this share of raw commits per second.
const GOAL: f64 = 0.5;

#[derive(Clone, Copy)]
enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    fn name(self) -> &'static str {
        match self {
            Backend::Sqlite => "SQLite",
            Backend::Postgres => "PostgreSQL",
        }
    }
}

/// Outcome of the HTTP load.
struct Load {
    lifecycles: u64,
    elapsed: Duration,
    latencies_ms: Vec<f64>,
}

/// Runs the benchmark on both stores.
pub fn run(ctx: &Ctx) -> Result<Vec<Row>> {
    let mut rows = vec![];
    for backend in [Backend::Sqlite, Backend::Postgres] {
        let figure = format!(
            "request→approve→active via HTTP, {} store, {} clients",
            backend.name(),
            ctx.clients
        );
        match run_one(ctx, backend) {
            Ok(row) => rows.push(Row { figure, ..row }),
            Err(e) => rows.push(Row::failed(&figure, &e)),
        }
    }
    Ok(rows)
}

fn run_one(ctx: &Ctx, backend: Backend) -> Result<Row> {
    let tag = unique_tag();
    let prefix = format!("alb_{tag}_");
    let ent_role = format!("albrole_{tag}");
    let schema = format!("airlock_bench_{tag}");
    let dir = ctx.work_dir.join(format!("lifecycle-{tag}"));
    std::fs::create_dir_all(&dir)?;
    let mut admin = pg::connect(&ctx.pg_url)?;
    pg::create_role(&mut admin, &ent_role)?;
    let db_url = match backend {
        Backend::Sqlite => format!("sqlite://{}", dir.join("airlock.db").display()),
        Backend::Postgres => {
            pg::create_schema(&mut admin, &schema)?;
            with_schema(&ctx.pg_url, &schema)
        }
    };
    let result = measure(ctx, backend, &dir, &db_url, &prefix, &ent_role);
    let _ = pg::drop_roles(&mut admin, &prefix, &[&ent_role]);
    if let Backend::Postgres = backend {
        let _ = pg::drop_schema(&mut admin, &schema);
    }
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn measure(
    ctx: &Ctx,
    backend: Backend,
    dir: &Path,
    db_url: &str,
    prefix: &str,
    ent_role: &str,
) -> Result<Row> {
    let catalog = harness::catalog(&ctx.pg_url, prefix, ent_role, "");
    let load = {
        let server = Server::start(&catalog, dir, db_url)?;
        eprintln!(
            "  {}: {} clients for {:?}",
            backend.name(),
            ctx.clients,
            ctx.load_time
        );
        drive(&server, ctx.clients, ctx.load_time)?
    };
    let commits = match backend {
        Backend::Sqlite => sqlite_commit_rate(&dir.join("peer.db"), ctx.peer_time)?,
        Backend::Postgres => pg_commit_rate(db_url, ctx.clients, ctx.peer_time)?,
    };
    let rate = load.lifecycles as f64 / load.elapsed.as_secs_f64();
    let lat = sorted(load.latencies_ms);
    let peer = match backend {
        Backend::Sqlite => "raw SQLite INSERT+COMMIT (WAL, synchronous=FULL), serial",
        Backend::Postgres => "raw PostgreSQL INSERT+COMMIT, 8 connections",
    };
    Ok(Row {
        figure: String::new(),
        measured: format!(
            "{rate:.1} lifecycles/s ({} in {:.1} s; p50 {:.0} ms, p99 {:.0} ms)",
            load.lifecycles,
            load.elapsed.as_secs_f64(),
            percentile(&lat, 50.0),
            percentile(&lat, 99.0)
        ),
        peer: format!("{peer}: {commits:.0} commits/s"),
        ratio: pct(rate, commits),
        goal: format!("≥ {:.0}%", GOAL * 100.0),
        met: Met::from(rate >= GOAL * commits),
    })
}

/// Runs `clients` threads looping request → approve → poll until active.
fn drive(server: &Server, clients: usize, time: Duration) -> Result<Load> {
    let api = server.api();
    let alice = api.token_for(&server.admin_token, "alice")?;
    let bob = api.token_for(&server.admin_token, "bob")?;
    // One lifecycle first, so connections and prepared statements are warm.
    one_lifecycle(&api, &alice, &bob)?;
    let stop = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let handles: Vec<_> = (0..clients)
        .map(|_| {
            let (api, alice, bob, stop) = (api.fork(), alice.clone(), bob.clone(), stop.clone());
            std::thread::spawn(move || -> Result<Vec<f64>> {
                let mut lat = vec![];
                while !stop.load(Ordering::Relaxed) {
                    let t = Instant::now();
                    one_lifecycle(&api, &alice, &bob)?;
                    lat.push(t.elapsed().as_secs_f64() * 1e3);
                }
                Ok(lat)
            })
        })
        .collect();
    std::thread::sleep(time);
    stop.store(true, Ordering::Relaxed);
    let mut latencies_ms = vec![];
    for h in handles {
        let lat = h
            .join()
            .map_err(|_| anyhow::anyhow!("client thread panicked"))??;
        latencies_ms.extend(lat);
    }
    Ok(Load {
        lifecycles: latencies_ms.len() as u64,
        elapsed: start.elapsed(),
        latencies_ms,
    })
}

fn one_lifecycle(api: &Api, alice: &str, bob: &str) -> Result<()> {
    let r = api.post(
        "/api/v1/requests",
        alice,
        json!({"entitlement": ENTITLEMENT, "duration": "1h", "reason": "bench"}),
    )?;
    let id = r["id"].as_str().unwrap_or_default().to_string();
    api.post(
        &format!("/api/v1/requests/{id}/reviews"),
        bob,
        json!({"decision": "approve"}),
    )?;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = api.get(&format!("/api/v1/requests/{id}"), alice)?;
        match r["state"].as_str() {
            Some("active") => return Ok(()),
            Some("approved") if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(2))
            }
            other => bail!("request {id} ended as {other:?}: {r}"),
        }
    }
}

/// Serial single-row durable commits on SQLite, configured like the store.
fn sqlite_commit_rate(path: &Path, time: Duration) -> Result<f64> {
    let conn = rusqlite::Connection::open(path)?;
    conn.execute_batch(
        "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; \
         CREATE TABLE IF NOT EXISTS peer (id INTEGER PRIMARY KEY, body TEXT NOT NULL);",
    )?;
    let mut stmt = conn.prepare("INSERT INTO peer (body) VALUES (?1)")?;
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < time {
        conn.execute_batch("BEGIN")?;
        stmt.execute(["x"])?;
        conn.execute_batch("COMMIT")?;
        n += 1;
    }
    Ok(n as f64 / start.elapsed().as_secs_f64())
}

/// Single-row commits on PostgreSQL from `conns` connections at once.
fn pg_commit_rate(url: &str, conns: usize, time: Duration) -> Result<f64> {
    pg::connect(url)?.batch_execute(
        "CREATE TABLE IF NOT EXISTS bench_peer (id bigserial PRIMARY KEY, body text NOT NULL)",
    )?;
    let start = Instant::now();
    let handles: Vec<_> = (0..conns)
        .map(|_| {
            let url = url.to_string();
            std::thread::spawn(move || -> Result<u64> {
                let mut c = pg::connect(&url)?;
                let stmt = c.prepare("INSERT INTO bench_peer (body) VALUES ($1)")?;
                let mut n = 0;
                while start.elapsed() < time {
                    c.execute(&stmt, &[&"x"])?;
                    n += 1;
                }
                Ok(n)
            })
        })
        .collect();
    let mut total = 0;
    for h in handles {
        total += h
            .join()
            .map_err(|_| anyhow::anyhow!("peer thread panicked"))??;
    }
    Ok(total as f64 / start.elapsed().as_secs_f64())
}
