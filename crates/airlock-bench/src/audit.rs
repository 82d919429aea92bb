//! Benchmark 4: `airlock audit verify --offline` (the real binary) over a
//! SQLite store of N events with a signed checkpoint every 1,000, next to plain
//! SHA-256 chaining (`prev || body`) over the same bytes already in memory, and
//! the same chain plus the RFC 9162 Merkle tree (what verify now computes).
//! Appending is shown next to the in-memory hashing it has to do.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use airlock_core::audit_chain::{AuditDraft, CheckpointSigner};
use airlock_service::keys::ServerKeys;
use airlock_store::{SqliteStore, Store};
use anyhow::{anyhow, bail, Result};
use serde_json::json;
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use crate::report::{Met, Row};
use crate::util::secs;
use crate::Ctx;

/// Events per `append_audit` call (one transaction).
const BATCH: usize = 1000;
/// Goal for 1,000,000 events, seconds (scaled linearly for smaller runs).
const GOAL_PER_MILLION: f64 = 3.0;
/// SHA-256 time ÷ verify time must reach this.
const GOAL_RATIO: f64 = 0.5;

/// Runs the benchmark.
pub fn run(ctx: &Ctx) -> Result<Vec<Row>> {
    let dir = ctx.work_dir.join("audit");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let db = dir.join("airlock.db");
    let keys = ServerKeys::load_or_create(&dir).map_err(|e| anyhow!("{e}"))?;
    let store = SqliteStore::open(
        &db.display().to_string(),
        Some(CheckpointSigner::new(keys.signing.clone(), 1000)),
    )
    .map_err(|e| anyhow!("{e}"))?;
    let t = Instant::now();
    fill(&store, ctx.audit_events)?;
    let fill_time = t.elapsed();
    eprintln!(
        "  appended {} events in {}",
        ctx.audit_events,
        secs(fill_time)
    );
    let cfg = dir.join("airlock.toml");
    std::fs::write(
        &cfg,
        format!(
            "[server]\ndatabase = \"sqlite://{}\"\ndata_dir = \"{}\"\n",
            db.display(),
            dir.display()
        ),
    )?;
    let verify = median(
        (0..3)
            .map(|_| verify_once(&ctx.airlock_bin, &cfg))
            .collect::<Result<_>>()?,
    );
    let (hash_time, tree_time, head_ok) = sha256_chain(&store)?;
    if !head_ok {
        bail!("plain SHA-256 chain does not end at the stored head hash");
    }
    drop(store);
    let _ = std::fs::remove_dir_all(&dir);
    let n = ctx.audit_events;
    let goal = GOAL_PER_MILLION * n as f64 / 1e6;
    let ratio = hash_time.as_secs_f64() / verify.as_secs_f64();
    Ok(vec![
        Row {
            figure: format!("`airlock audit verify --offline`, {n} events (median of 3, wall clock incl. process start)"),
            measured: secs(verify),
            peer: format!("plain SHA-256 chain over the same bytes in memory: {}", secs(hash_time)),
            ratio: format!("{ratio:.2}"),
            goal: format!("≤ {goal:.1} s and ratio ≥ {GOAL_RATIO}"),
            met: Met::from(verify.as_secs_f64() <= goal && ratio >= GOAL_RATIO),
        },
        Row::info(
            format!("`audit verify --offline` vs SHA-256 chain + Merkle tree (leaf + node hashes) in memory, {n} events"),
            format!("{} vs {} (ratio {:.2})", secs(verify), secs(tree_time), tree_time.as_secs_f64() / verify.as_secs_f64()),
        ),
        Row::info(
            format!("Store::append_audit, {BATCH} events per call, checkpoint every 1000, Merkle frontier kept (SQLite)"),
            format!(
                "{:.0} events/s; chain + tree hashing alone: {:.0} events/s",
                n as f64 / fill_time.as_secs_f64(),
                n as f64 / tree_time.as_secs_f64()
            ),
        ),
    ])
}

/// Appends `n` realistic events in batches.
fn fill(store: &SqliteStore, n: usize) -> Result<()> {
    let kinds = [
        "request.created",
        "request.reviewed",
        "request.approved",
        "grant.applied",
        "request.expired",
        "grant.removed",
    ];
    let mut seq = 0usize;
    while seq < n {
        let batch: Vec<AuditDraft> = (seq..(seq + BATCH).min(n))
            .map(|i| {
                AuditDraft::new(
                    kinds[i % kinds.len()],
                    if i % 3 == 0 { "alice" } else { "system" },
                    format!("request:r{:015}", i / kinds.len()),
                    json!({"entitlement": "payments-db-write", "duration": 1800, "reason": "INC-4211 investigate", "provider": "pg-main"}),
                )
            })
            .collect();
        seq += batch.len();
        store
            .append_audit(&batch, OffsetDateTime::now_utc())
            .map_err(|e| anyhow!("append_audit: {e}"))?;
    }
    Ok(())
}

fn verify_once(bin: &Path, cfg: &Path) -> Result<Duration> {
    let t = Instant::now();
    let out = Command::new(bin)
        .args(["audit", "verify", "--offline", "--config"])
        .arg(cfg)
        .output()?;
    let elapsed = t.elapsed();
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() || !stdout.contains("OK") {
        bail!(
            "airlock audit verify failed ({}): {stdout} {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(elapsed)
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// Reads every body into memory, then times `SHA-256(prev || body)` over all of
/// them, and again with the Merkle frontier; also says whether the chain ends
/// at the stored head hash.
fn sha256_chain(store: &SqliteStore) -> Result<(Duration, Duration, bool)> {
    let mut bodies: Vec<Vec<u8>> = Vec::new();
    let mut last = Vec::new();
    store
        .audit_scan(&mut |_, body, hash| {
            bodies.push(body.to_vec());
            last = hash.to_vec();
            true
        })
        .map_err(|e| anyhow!("{e}"))?;
    let t = Instant::now();
    let mut prev = [0u8; 32];
    for body in &bodies {
        let mut h = Sha256::new();
        h.update(prev);
        h.update(body);
        prev = h.finalize().into();
    }
    let elapsed = t.elapsed();
    let t = Instant::now();
    let mut prev2 = [0u8; 32];
    let mut tree = airlock_core::merkle::Frontier::new();
    for body in &bodies {
        let mut h = Sha256::new();
        h.update(prev2);
        h.update(body);
        prev2 = h.finalize().into();
        tree.push_body(body);
    }
    std::hint::black_box(tree.root());
    let with_tree = t.elapsed();
    Ok((elapsed, with_tree, prev.as_slice() == last.as_slice()))
}
