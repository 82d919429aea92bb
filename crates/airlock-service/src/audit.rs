//! Online verification of the audit chain and its signed checkpoints.

use std::sync::Arc;

use airlock_core::audit_chain::ChainVerifier;

use crate::{Service, ServiceError};

/// Verifies the audit chain and its signed checkpoints (API and web UI).
/// Incremental: this replica keeps the verifier state of the last good pass
/// and feeds it only the events appended since, so a call costs the new
/// events, not the whole log. The first call after start-up checks
/// everything; `airlock audit verify --offline` always does.
pub async fn verify_audit_chain(
    app: &Arc<Service>,
) -> Result<airlock_core::audit_chain::VerifyReport, ServiceError> {
    // One verification at a time per replica: they share the kept prefix.
    let mut kept = app.audit_verified.lock().await;
    let prefix = kept.take().filter(|v| !v.failed());
    let key = app.keys.signing.verifying_key();
    let every = app.config.server.checkpoint_every;
    let (report, state) = app
        .db_untracked(move |s| {
            // A rewrite that recomputed the chain must change the stored hash
            // of the last event verified: then everything is checked again.
            let anchored = match prefix {
                Some(v) if v.next_seq() == 1 => Some(v),
                Some(v) => {
                    let last = s.audit_events(v.next_seq() - 2, 1)?;
                    last.first()
                        .filter(|e| e.seq == v.next_seq() - 1 && e.hash == v.last_hash())
                        .is_some()
                        .then_some(v)
                }
                None => None,
            };
            let mut v = match anchored {
                Some(mut v) => {
                    v.resume_with(s.audit_checkpoints_after(v.next_seq() - 1, u32::MAX)?);
                    v
                }
                None => ChainVerifier::new(Some(key), s.audit_checkpoints()?).require_every(every),
            };
            let mut since = v.next_seq() - 1;
            while !v.failed() {
                let page = s.audit_events(since, 10_000)?;
                let Some(last) = page.last() else { break };
                since = last.seq;
                for e in &page {
                    v.feed(e.seq, &e.body, &e.hash);
                }
            }
            Ok((v.report(s.audit_head()?), v))
        })
        .await?;
    if report.ok {
        *kept = Some(state);
    }
    app.metrics
        .audit_verified(report.ok, report.events, app.now().unix_timestamp());
    Ok(report)
}

/// How often every replica verifies the audit log by itself (incremental,
/// so a pass costs the events appended since the last one).
const WATCH_EVERY: std::time::Duration = std::time::Duration::from_secs(60);

/// Every this many watch passes, the kept prefix is dropped and the whole
/// log is verified again: an incremental pass would not re-read an old event
/// whose body was edited in place without touching the hashes after it.
const FULL_EVERY: u32 = 60;

/// Verifies the audit log shortly after start-up and then every minute
/// (the whole log again every hour), so `airlock_audit_chain_ok` tells
/// monitoring about a rewrite without anyone running `airlock audit verify`.
/// A failure is also logged as an error.
pub async fn watch(app: Arc<Service>) {
    let mut wait = std::time::Duration::from_secs(2);
    let mut pass = 0u32;
    while !app.is_stopping() {
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = app.stopped() => break,
        }
        wait = WATCH_EVERY;
        pass = pass.wrapping_add(1);
        if pass.is_multiple_of(FULL_EVERY) {
            *app.audit_verified.lock().await = None;
        }
        match verify_audit_chain(&app).await {
            Ok(r) if r.ok => {}
            Ok(r) => tracing::error!(
                first_bad_seq = ?r.first_bad_seq,
                problem = r.problem.as_deref().unwrap_or(""),
                "the audit log does not verify: run `airlock audit verify` and treat this as an incident"
            ),
            Err(e) => {
                tracing::warn!(error = %e, "could not verify the audit log; retrying in a minute")
            }
        }
    }
}
