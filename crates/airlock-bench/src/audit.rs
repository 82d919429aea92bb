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
/// Appending with the Merkle tree ÷ appending before it must reach this
/// ("as fast as today", with room for run-to-run noise).
const GOAL_APPEND: f64 = 0.9;

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
    let append_rows = match &ctx.append_probes {
        Some((before, now)) => vec![
            append_before_after(ctx, before, now)?,
            append_instructions(ctx, before, now)?,
        ],
        None => vec![Row::info(
            "Store::append_audit before vs after the transparency log".to_string(),
            "not run: bench/run builds the probes (bench/append-probes)".to_string(),
        )],
    };
    let goal = GOAL_PER_MILLION * n as f64 / 1e6;
    let ratio = hash_time.as_secs_f64() / verify.as_secs_f64();
    Ok([
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
    ]
    .into_iter()
    .chain(append_rows)
    .collect())
}

/// Times the two append probes (`bench/append-probe/main.rs` built against the
/// sources before the transparency log and against this tree) on fresh
/// databases, alternating before/now five times so drift in machine load hits
/// both alike; compares the medians.
fn append_before_after(ctx: &Ctx, before: &Path, now: &Path) -> Result<Row> {
    let n = ctx.audit_events;
    let dir = ctx.work_dir.join("append");
    let mut times = [Vec::new(), Vec::new()];
    for round in 0..5 {
        for (i, bin) in [before, now].into_iter().enumerate() {
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir)?;
            let db = dir.join("airlock.db");
            let out = Command::new(bin)
                .arg(&db)
                .arg(n.to_string())
                .output()
                .map_err(|e| anyhow!("{}: {e}", bin.display()))?;
            if !out.status.success() {
                bail!(
                    "{} failed ({}): {}",
                    bin.display(),
                    out.status,
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            let secs: f64 = String::from_utf8_lossy(&out.stdout)
                .trim()
                .parse()
                .map_err(|e| anyhow!("{} printed no time: {e}", bin.display()))?;
            eprintln!(
                "  append round {round} {}: {secs:.2} s",
                ["before", "now"][i]
            );
            times[i].push(Duration::from_secs_f64(secs));
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    let [b, w] = times.map(median);
    let rate = |d: Duration| n as f64 / d.as_secs_f64();
    let ratio = rate(w) / rate(b);
    Ok(Row {
        figure: format!("`Store::append_audit`, {n} events, {BATCH} per call, checkpoint every 1000 (SQLite): now (chain + Merkle frontier) vs before the transparency log (chain only), median of 5 alternating"),
        measured: format!("{:.0} events/s", rate(w)),
        peer: format!("before (0698b1d): {:.0} events/s", rate(b)),
        ratio: format!("{ratio:.2}"),
        goal: format!("≥ {GOAL_APPEND}"),
        met: Met::from(ratio >= GOAL_APPEND),
    })
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

/// Counts the instructions each probe executes for the same appends under
/// `valgrind --tool=callgrind`: unlike seconds, the count does not move with
/// the machine's load, so it says whether the tree made appending more work.
fn append_instructions(ctx: &Ctx, before: &Path, now: &Path) -> Result<Row> {
    let n = (ctx.audit_events / 10).max(1000);
    if Command::new("valgrind").arg("--version").output().is_err() {
        return Ok(Row::info(
            format!("instructions per appended event, {n} events"),
            "not run: valgrind is not installed (apt-get install valgrind)",
        ));
    }
    let dir = ctx.work_dir.join("append-ir");
    let mut counts = Vec::new();
    for bin in [before, now] {
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        let out = Command::new("valgrind")
            .arg("--tool=callgrind")
            .arg(format!(
                "--callgrind-out-file={}",
                dir.join("callgrind.out").display()
            ))
            .arg(bin)
            .arg(dir.join("airlock.db"))
            .arg(n.to_string())
            .output()?;
        let err = String::from_utf8_lossy(&out.stderr);
        if !out.status.success() {
            bail!("callgrind {} failed ({}): {err}", bin.display(), out.status);
        }
        let ir: u64 = err
            .lines()
            .find_map(|l| {
                l.split_once("Collected :")
                    .map(|(_, v)| v.trim().to_string())
            })
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| anyhow!("callgrind printed no instruction count: {err}"))?;
        // SHA-256 compression's share: valgrind hides SHA-NI, so sha2 takes
        // its software path here and hashing weighs far more than natively.
        let annotate = Command::new("callgrind_annotate")
            .arg(dir.join("callgrind.out"))
            .output()?;
        let sha: u64 = String::from_utf8_lossy(&annotate.stdout)
            .lines()
            .filter(|l| l.contains("sha256") && l.contains("compress"))
            .filter_map(|l| l.split_whitespace().next())
            .filter_map(|v| v.replace(',', "").parse::<u64>().ok())
            .sum();
        counts.push((ir as f64 / n as f64, sha as f64 / n as f64));
    }
    let _ = std::fs::remove_dir_all(&dir);
    let ((b, b_sha), (w, w_sha)) = (counts[0], counts[1]);
    Ok(Row {
        figure: format!("instructions per appended event (callgrind, {n} events, whole process incl. open): now vs before the transparency log; SHA-256 compression (software path under valgrind) named apart"),
        measured: format!("{w:.0} instructions/event, of which SHA-256 {w_sha:.0}; the rest {:.0}", w - w_sha),
        peer: format!("before (0698b1d): {b:.0}, of which SHA-256 {b_sha:.0}; the rest {:.0}", b - b_sha),
        ratio: format!("{:.2} (rest: {:.2})", b / w, (b - b_sha) / (w - w_sha)),
        goal: "report (the goal is 4d's seconds)".into(),
        met: Met::Info,
    })
}
