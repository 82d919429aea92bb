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
    Ok(report)
}
