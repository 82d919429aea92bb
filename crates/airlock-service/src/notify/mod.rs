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

use crate::Service;

pub mod email;
mod review_mail;
pub mod slack;
pub mod webhook;

/// How long a sink lease lasts without renewal (another replica takes over after).
pub const SINK_LEASE: Duration = Duration::from_secs(30);
/// Audit events read per round trip.
pub const BATCH: u32 = 256;
/// The cursor is written after this many handled events (and whenever the
/// sink waits): a crash re-delivers at most this many, which receivers
/// dedupe by `X-Airlock-Delivery`.
pub const COMMIT_EVERY: usize = 64;
/// Longest wait between two delivery attempts of one event.
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Why a delivery did not happen.
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    /// Temporary (network, 5xx, 429): the same event is tried again, later.
    #[error("{0} (will retry)")]
    Retry(String),
    /// Temporary, and the receiver said when to come back (`Retry-After`,
    /// already capped): waited at least that long before the next attempt.
    #[error("{0} (will retry in {1:?})")]
    RetryAfter(String, Duration),
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
    /// Non-secret name for metric labels and logs (a webhook's `name`, never its URL).
    fn label(&self) -> &str {
        self.sink()
    }
    /// Whether `event` concerns this sink; skipped events still advance the cursor.
    fn wants(&self, event: &AuditEvent) -> bool;
    /// Delivers one event. Called again with the same event after `Retry`.
    async fn deliver(&self, app: &Arc<Service>, event: &AuditEvent) -> Result<(), DeliveryError>;
    /// Whether this sink witnesses signed tree heads (`audit.checkpoint`).
    fn wants_checkpoints(&self) -> bool {
        false
    }
    /// Sends a signed tree head covering `size` events.
    async fn deliver_checkpoint(
        &self,
        _app: &Arc<Service>,
        _size: u64,
        _note: &str,
    ) -> Result<(), DeliveryError> {
        Ok(())
    }
}

/// The service whose owners review `run`: its operation's, if it has one.
fn run_service(app: &Service, run: &airlock_core::run::Run) -> Option<airlock_core::ServiceName> {
    run.operation
        .as_ref()
        .and_then(|o| app.config.operations.get(o))
        .and_then(|o| o.service.clone())
}

/// Reads a secret given inline or as a file relative to `config_dir`.
pub fn read_secret(config_dir: &Path, source: &SecretSource) -> Result<String, crate::SetupError> {
    match source {
        SecretSource::Inline(s) => Ok(s.clone()),
        SecretSource::File(f) => {
            let path = config_dir.join(f);
            let text = std::fs::read_to_string(&path)
                .map_err(|e| format!("cannot read secret file {}: {e}", path.display()))?;
            let text = text.trim_end_matches(['\n', '\r']).to_string();
            if text.is_empty() {
                return Err(format!("secret file {} is empty", path.display()).into());
            }
            Ok(text)
        }
    }
}

/// Builds the configured notifiers (secrets read now, so a missing file fails start-up).
pub fn build(
    config: &airlock_core::config::Config,
    config_dir: &Path,
) -> Result<Vec<Arc<dyn Notifier>>, crate::SetupError> {
    let mut out: Vec<Arc<dyn Notifier>> = Vec::new();
    for (i, w) in config.notify.webhook.iter().enumerate() {
        let ctx = format!("[[notify.webhook]] `{}`", w.url);
        let source = airlock_core::notify::secret_source(
            &ctx,
            "secret",
            w.secret.as_ref(),
            w.secret_file.as_ref(),
            true,
        )
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("{ctx}: `secret` (or `secret_file`) is required"))?;
        let secret = read_secret(config_dir, &source).map_err(|e| format!("{ctx}: {e}"))?;
        out.push(Arc::new(webhook::Webhook::new(w, w.name_at(i), secret)?));
    }
    if let Some(e) = &config.notify.email {
        out.push(Arc::new(email::Email::new(e, config_dir)?));
    }
    if let Some(s) = slack::api::Slack::from_config(config, config_dir)? {
        out.push(Arc::new(slack::SlackNotifier::new(Arc::new(s))));
    }
    Ok(out)
}

/// Starts one delivery loop per notifier. New sinks start at the current head
/// of the chain: they get what happens from now on, not the history.
pub fn spawn_all(app: &Arc<Service>) {
    for n in app.notifiers.iter().cloned() {
        tokio::spawn(run_sink(app.clone(), n));
    }
    let witnesses: Vec<_> = app
        .notifiers
        .iter()
        .filter(|n| n.wants_checkpoints())
        .cloned()
        .collect();
    if !witnesses.is_empty() {
        tokio::spawn(run_witnesses(app.clone(), witnesses));
    }
}

/// Sends each new signed tree head to the sinks that witness them. Signing
/// a head appends nothing to the chain (else every head would move the head
/// again), so this runs beside the event cursor: only the newest head
/// matters, since it commits to every earlier one. At-least-once; replicas
/// may each send the same head (`X-Airlock-Delivery: checkpoint-SIZE`).
async fn run_witnesses(app: Arc<Service>, sinks: Vec<Arc<dyn Notifier>>) {
    let mut sent = vec![0u64; sinks.len()];
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
    loop {
        tick.tick().await;
        let latest = match app.db_untracked(|s| s.audit_latest_checkpoint()).await {
            Ok(Some(cp)) => cp,
            Ok(None) => continue,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the latest signed tree head");
                continue;
            }
        };
        let Some(note) = latest.note.as_deref() else {
            continue;
        };
        for (i, sink) in sinks.iter().enumerate() {
            if sent[i] >= latest.seq {
                continue;
            }
            match sink.deliver_checkpoint(&app, latest.seq, note).await {
                Ok(()) => sent[i] = latest.seq,
                Err(e) => {
                    tracing::warn!(sink = sink.label(), size = latest.seq, error = ?e, "signed tree head not delivered; retrying");
                }
            }
        }
    }
}

/// Events not yet handled per configured sink (chain head − cursor), for metrics.
pub async fn lags(app: &Arc<Service>) -> Result<Vec<(String, u64)>, crate::ServiceError> {
    let (head, cursors) = app
        .db_untracked(|s| Ok((s.audit_head()?.unwrap_or(0), s.sink_cursors()?)))
        .await?;
    Ok(app
        .notifiers
        .iter()
        .map(|n| {
            let cursor = cursors.iter().find(|(s, _)| s == n.sink()).map(|(_, c)| *c);
            (
                n.label().to_string(),
                cursor.map_or(0, |c| head.saturating_sub(c)),
            )
        })
        .collect())
}

/// This replica's hold on one sink: renewed while delivering, so no other
/// replica starts delivering the same events (which would break the order).
struct Lease {
    sink: String,
    owner: String,
    renewed: std::time::Instant,
}

impl Lease {
    /// Renews the lease if a third of it has passed; false if it was lost.
    async fn keep(&mut self, app: &Arc<Service>) -> bool {
        if self.renewed.elapsed() < SINK_LEASE / 3 {
            return true;
        }
        self.renew(app).await
    }

    async fn renew(&mut self, app: &Arc<Service>) -> bool {
        let (sink, owner, now) = (self.sink.clone(), self.owner.clone(), app.now());
        match app
            .db_untracked(move |s| s.lease_sink(&sink, &owner, 0, now + SINK_LEASE, now))
            .await
        {
            Ok(Some(_)) => {
                self.renewed = std::time::Instant::now();
                true
            }
            Ok(None) => false,
            // The store is unreachable: keep going while the lease is surely
            // still ours; the cursor write will fail (and stop us) otherwise.
            Err(_) => self.renewed.elapsed() < SINK_LEASE * 2 / 3,
        }
    }

    /// Writes the cursor; false if the lease was lost or the write failed.
    async fn commit(&mut self, app: &Arc<Service>, seq: u64) -> bool {
        let (sink, owner, now) = (self.sink.clone(), self.owner.clone(), app.now());
        match app
            .db_untracked(move |s| s.advance_sink(&sink, &owner, seq, now))
            .await
        {
            Ok(ok) => ok,
            Err(e) => {
                tracing::warn!(sink = crate::metrics::label(&self.sink), error = %e, "cannot record delivery; will redeliver");
                false
            }
        }
    }
}

/// Follows the chain for one sink: lease, read a batch, deliver in order,
/// advance the cursor every [`COMMIT_EVERY`] events and before any wait.
async fn run_sink(app: Arc<Service>, notifier: Arc<dyn Notifier>) {
    let sink = notifier.sink().to_string();
    // For logs and metrics: a webhook URL may itself be the secret.
    let shown = crate::metrics::label(notifier.label());
    let mut tick = app.audit_tick.subscribe();
    let start = loop {
        match app.db_untracked(|s| s.audit_head()).await {
            Ok(h) => break h.unwrap_or(0),
            Err(e) => {
                tracing::warn!(sink = shown, error = %e, "cannot read the audit head; retrying");
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
            .db_untracked(move |s| s.lease_sink(&sink2, &owner, start, until, now))
            .await
        {
            Ok(Some(c)) => c,
            Ok(None) => {
                // Another replica delivers this sink; check again after its lease could end.
                tokio::time::sleep(SINK_LEASE / 3).await;
                continue;
            }
            Err(e) => {
                tracing::warn!(sink = shown, error = %e, "cannot lease the sink; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        let mut lease = Lease {
            sink: sink.clone(),
            owner: app.replica_id.clone(),
            renewed: std::time::Instant::now(),
        };
        let events = match app
            .db_untracked(move |s| s.audit_events(cursor, BATCH))
            .await
        {
            Ok(ev) => ev,
            Err(e) => {
                tracing::warn!(sink = shown, error = %e, "cannot read audit events; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        if events.is_empty() {
            // Woken by a local write; other replicas' writes are seen by polling.
            let _ = tokio::time::timeout(Duration::from_secs(1), tick.changed()).await;
            continue;
        }
        // `done`: last seq handled (delivered, dropped or not wanted);
        // `committed`: last seq written to the store.
        let (mut done, mut committed) = (cursor, cursor);
        for sealed in events {
            if !lease.keep(&app).await {
                break;
            }
            match sealed.to_event() {
                None => tracing::error!(
                    sink = shown,
                    seq = sealed.seq,
                    "audit event does not decode; skipped"
                ),
                Some(event) if notifier.wants(&event) => {
                    let attempt = Attempt {
                        app: &app,
                        notifier: notifier.as_ref(),
                        event: &event,
                    };
                    match attempt.run(&mut lease, &mut committed, done).await {
                        Outcome::Delivered => app.metrics.notify_delivered(notifier.label()),
                        Outcome::Dropped => app.metrics.notify_failed(notifier.label()),
                        Outcome::LeaseLost => break,
                    }
                }
                Some(_) => {}
            }
            done = sealed.seq;
            if done - committed >= COMMIT_EVERY as u64 {
                if !lease.commit(&app, done).await {
                    break;
                }
                committed = done;
            }
        }
        if done > committed {
            lease.commit(&app, done).await;
        }
    }
}

enum Outcome {
    Delivered,
    Dropped,
    LeaseLost,
}

/// Delivery of one event, retried with backoff while this replica keeps the lease.
struct Attempt<'a> {
    app: &'a Arc<Service>,
    notifier: &'a dyn Notifier,
    event: &'a AuditEvent,
}

/// Logs a failed delivery and when it is tried again.
fn failed(sink: &str, seq: u64, why: &str, wait: Duration, note: &str) {
    tracing::warn!(
        sink,
        seq,
        why,
        retry_in_ms = wait.as_millis() as u64,
        "notification failed{note}"
    );
}

impl Attempt<'_> {
    async fn run(&self, lease: &mut Lease, committed: &mut u64, done: u64) -> Outcome {
        let (app, event, sink) = (self.app, self.event, self.notifier.label());
        let shown = crate::metrics::label(sink);
        let mut backoff = Duration::from_millis(250);
        loop {
            let wait = match self.notifier.deliver(app, event).await {
                Ok(()) => return Outcome::Delivered,
                Err(DeliveryError::Drop(why)) => {
                    tracing::error!(sink = shown, seq = event.seq, kind = %event.kind, why, "notification dropped");
                    return Outcome::Dropped;
                }
                Err(DeliveryError::Retry(why)) => {
                    failed(&shown, event.seq, &why, backoff, "");
                    backoff
                }
                Err(DeliveryError::RetryAfter(why, after)) => {
                    let wait = after.max(backoff);
                    failed(&shown, event.seq, &why, wait, "; receiver asked to wait");
                    wait
                }
            };
            app.metrics.notify_failed_attempt(sink);
            // Record what is done before waiting, so a crash during a long
            // outage does not re-deliver it.
            if done > *committed {
                if !lease.commit(app, done).await {
                    return Outcome::LeaseLost;
                }
                *committed = done;
            }
            // Sleep in slices, renewing the lease, so no other replica takes
            // over (and delivers out of order) while this one waits.
            let until = tokio::time::Instant::now() + wait;
            loop {
                let left = until.saturating_duration_since(tokio::time::Instant::now());
                if left.is_zero() {
                    break;
                }
                tokio::time::sleep(left.min(SINK_LEASE / 3)).await;
                if !lease.renew(app).await {
                    return Outcome::LeaseLost;
                }
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }
}
