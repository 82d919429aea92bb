//! Notifications: Slack, signed webhooks and email. The audit chain is the
//! outbox: every notifier is a *sink* that follows the chain from its own
//! persisted cursor, so delivery is at-least-once, in order, and survives
//! restarts and outages. One replica delivers per sink (a lease in the store).
//! Notifiers never change requests or runs; reactions (a Slack button) come
//! back through the API's rules like any other review.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use airlock_core::audit_chain::AuditEvent;
use airlock_core::notify::SecretSource;

use crate::app::App;

pub mod slack;

/// How long a sink lease lasts without renewal (another replica takes over after).
pub const SINK_LEASE: Duration = Duration::from_secs(30);
/// Audit events read per round trip.
pub const BATCH: u32 = 256;
/// Longest wait between two delivery attempts of one event.
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Why a delivery did not happen.
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    /// Temporary (network, 5xx, 429): the same event is tried again, later.
    #[error("{0} (will retry)")]
    Retry(String),
    /// Permanent for this event (e.g. a 4xx the receiver will always give):
    /// logged and counted, and the sink moves on so one bad event does not
    /// block everything behind it.
    #[error("{0} (dropped)")]
    Drop(String),
}

/// A destination for audit events. Implementations: [`webhook`], [`slack`], [`email`].
#[async_trait::async_trait]
pub trait Notifier: Send + Sync {
    /// Stable sink id, the key of the persisted cursor (`webhook:<url>`, `slack`, `email`).
    fn sink(&self) -> &str;
    /// Whether `event` concerns this sink; skipped events still advance the cursor.
    fn wants(&self, event: &AuditEvent) -> bool;
    /// Delivers one event. Called again with the same event after `Retry`.
    async fn deliver(&self, app: &Arc<App>, event: &AuditEvent) -> Result<(), DeliveryError>;
}

/// Reads a secret given inline or as a file relative to `config_dir`.
pub fn read_secret(config_dir: &Path, source: &SecretSource) -> Result<String, String> {
    match source {
        SecretSource::Inline(s) => Ok(s.clone()),
        SecretSource::File(f) => {
            let path = config_dir.join(f);
            let text = std::fs::read_to_string(&path)
                .map_err(|e| format!("cannot read secret file {}: {e}", path.display()))?;
            let text = text.trim_end_matches(['\n', '\r']).to_string();
            if text.is_empty() {
                return Err(format!("secret file {} is empty", path.display()));
            }
            Ok(text)
        }
    }
}

/// Builds the configured notifiers (secrets read now, so a missing file fails start-up).
pub fn build(
    config: &airlock_core::config::Config,
    config_dir: &Path,
) -> Result<Vec<Arc<dyn Notifier>>, String> {
    let mut out: Vec<Arc<dyn Notifier>> = Vec::new();
    if let Some(s) = slack::api::Slack::from_config(config, config_dir)? {
        out.push(Arc::new(slack::SlackNotifier::new(Arc::new(s))));
    }
    Ok(out)
}

/// Starts one delivery loop per notifier. New sinks start at the current head
/// of the chain: they get what happens from now on, not the history.
pub fn spawn_all(app: &Arc<App>) {
    for n in app.notifiers.iter().cloned() {
        tokio::spawn(run_sink(app.clone(), n));
    }
}

/// Follows the chain for one sink: lease, read a batch, deliver in order,
/// advance the cursor after each delivered event.
async fn run_sink(app: Arc<App>, notifier: Arc<dyn Notifier>) {
    let sink = notifier.sink().to_string();
    let mut tick = app.audit_tick.subscribe();
    let start = loop {
        match app.db(|s| s.audit_head()).await {
            Ok(h) => break h.unwrap_or(0),
            Err(e) => {
                tracing::warn!(sink, error = %e.detail, "cannot read the audit head; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    };
    loop {
        let owner = app.replica_id.clone();
        let sink2 = sink.clone();
        let now = app.now();
        let until = now + SINK_LEASE;
        let cursor = match app
            .db(move |s| s.lease_sink(&sink2, &owner, start, until, now))
            .await
        {
            Ok(Some(c)) => c,
            Ok(None) => {
                // Another replica delivers this sink; check again after its lease could end.
                tokio::time::sleep(SINK_LEASE / 3).await;
                continue;
            }
            Err(e) => {
                tracing::warn!(sink, error = %e.detail, "cannot lease the sink; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        let events = match app.db(move |s| s.audit_events(cursor, BATCH)).await {
            Ok(ev) => ev,
            Err(e) => {
                tracing::warn!(sink, error = %e.detail, "cannot read audit events; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        if events.is_empty() {
            // Woken by a local write; other replicas' writes are seen by polling.
            let _ = tokio::time::timeout(Duration::from_secs(1), tick.changed()).await;
            continue;
        }
        for sealed in events {
            let Some(event) = sealed.to_event() else {
                tracing::error!(
                    sink,
                    seq = sealed.seq,
                    "audit event does not decode; skipped"
                );
                continue;
            };
            if notifier.wants(&event) {
                deliver_with_retry(&app, notifier.as_ref(), &event).await;
            }
            let (sink2, owner, seq, now) =
                (sink.clone(), app.replica_id.clone(), event.seq, app.now());
            match app
                .db(move |s| s.advance_sink(&sink2, &owner, seq, now))
                .await
            {
                Ok(true) => {}
                Ok(false) => break, // lease lost: the new holder continues from the cursor
                Err(e) => {
                    tracing::warn!(sink, error = %e.detail, "cannot record delivery; will redeliver");
                    break;
                }
            }
        }
    }
}

async fn deliver_with_retry(app: &Arc<App>, notifier: &dyn Notifier, event: &AuditEvent) {
    let mut backoff = Duration::from_millis(250);
    loop {
        match notifier.deliver(app, event).await {
            Ok(()) => return,
            Err(DeliveryError::Drop(why)) => {
                tracing::error!(sink = notifier.sink(), seq = event.seq, kind = %event.kind, why, "notification dropped");
                return;
            }
            Err(DeliveryError::Retry(why)) => {
                tracing::warn!(
                    sink = notifier.sink(),
                    seq = event.seq,
                    why,
                    retry_in_ms = backoff.as_millis() as u64,
                    "notification failed"
                );
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
                // Keep the lease while retrying, so no other replica delivers out of order.
                let (sink, owner, now) = (
                    notifier.sink().to_string(),
                    app.replica_id.clone(),
                    app.now(),
                );
                let _ = app
                    .db(move |s| s.lease_sink(&sink, &owner, 0, now + SINK_LEASE, now))
                    .await;
            }
        }
    }
}
