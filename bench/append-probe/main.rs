//! Append probe for benchmark 4d: appends N audit events to a fresh SQLite
//! store through `Store::append_audit` (1,000 per call, a signed checkpoint
//! every 1,000) and prints the seconds it took.
//!
//! `bench/append-probes` builds this one file twice, against the airlock
//! sources before the transparency log (commit 0698b1d: SHA-256 chain only)
//! and against the working tree (chain + Merkle frontier), so the two can be
//! timed side by side in one benchmark run with identical code around them.

use airlock_core::audit_chain::{AuditDraft, CheckpointSigner};
use airlock_store::{SqliteStore, Store};
use ed25519_dalek::SigningKey;
use serde_json::json;
use std::time::Instant;
use time::OffsetDateTime;

const BATCH: usize = 1000;

fn main() {
    let mut args = std::env::args().skip(1);
    let (Some(db), Some(n)) = (args.next(), args.next()) else {
        eprintln!("usage: append-probe DB_PATH EVENTS");
        std::process::exit(2);
    };
    let n: usize = match n.parse() {
        Ok(n) => n,
        Err(e) => {
            eprintln!("append-probe: EVENTS must be a number: {e}");
            std::process::exit(2);
        }
    };
    let signer = CheckpointSigner::new(SigningKey::from_bytes(&[7u8; 32]), 1000);
    let store = match SqliteStore::open(&db, Some(signer)) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("append-probe: open {db}: {e}");
            std::process::exit(1);
        }
    };
    // The same events benchmark 4 appends (bench/src/audit.rs `fill`).
    let kinds = [
        "request.created",
        "request.reviewed",
        "request.approved",
        "grant.applied",
        "request.expired",
        "grant.removed",
    ];
    let t = Instant::now();
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
        if let Err(e) = store.append_audit(&batch, OffsetDateTime::now_utc()) {
            eprintln!("append-probe: append_audit: {e}");
            std::process::exit(1);
        }
    }
    println!("{:.6}", t.elapsed().as_secs_f64());
}
