//! Slack: a Block Kit message per request or run that needs a decision,
//! posted to the owning service's channel and updated in place as its state
//! changes; Approve/Deny buttons come back through [`interactions`], which
//! applies the API's own review rules. Delivery follows the audit chain like
//! every sink, so a Slack outage delays messages but loses none.

pub mod api;
pub mod blocks;

use std::sync::Arc;
use std::time::Duration;

use airlock_core::audit_chain::AuditEvent;
use airlock_core::request::RequestId;
use airlock_core::run::RunId;
use airlock_core::ServiceName;
use sha2::{Digest, Sha256};

use self::api::{Posted, Slack, SlackError, MAX_RETRY_AFTER};
use self::blocks::Message;
use super::{DeliveryError, Notifier};
use crate::Service;

/// Sink id (cursor key and chat-message namespace).
pub const SINK: &str = "slack";

/// Request events that change what the message shows.
const REQUEST_EVENTS: &[&str] = &[
    "request.created",
    "request.reviewed",
    "request.approved",
    "request.denied",
    "request.withdrawn",
    "request.lapsed",
    "request.expired",
    "request.revoked",
    "grant.applied",
    "grant.failed",
    "breakglass.activated",
    "breakglass.reviewed",
];

/// Run events that change what the message shows.
const RUN_EVENTS: &[&str] = &[
    "run.created",
    "run.reviewed",
    "run.approved",
    "run.denied",
    "run.lapsed",
    "run.started",
    "run.finished",
    "run.cancelled",
];

/// What is stored per subject: where the message is and what it shows.
#[derive(serde::Serialize, serde::Deserialize)]
struct Stored {
    #[serde(flatten)]
    at: Posted,
    /// SHA-256 of the last text and blocks sent, to skip identical updates.
    sha256: String,
}

/// The `slack` sink.
pub struct SlackNotifier {
    slack: Arc<Slack>,
}

impl SlackNotifier {
    /// A notifier posting with `slack`.
    pub fn new(slack: Arc<Slack>) -> Self {
        SlackNotifier { slack }
    }
}

/// What to show about a subject and where it belongs.
struct Rendered {
    message: Message,
    service: Option<ServiceName>,
    /// Whether a first message should be posted now (false: only update one).
    announce: bool,
}

#[async_trait::async_trait]
impl Notifier for SlackNotifier {
    fn sink(&self) -> &str {
        SINK
    }

    fn wants(&self, event: &AuditEvent) -> bool {
        let kind = event.kind.as_str();
        (event.subject.starts_with("request:") && REQUEST_EVENTS.contains(&kind))
            || (event.subject.starts_with("run:") && RUN_EVENTS.contains(&kind))
    }

    async fn deliver(&self, app: &Arc<Service>, event: &AuditEvent) -> Result<(), DeliveryError> {
        let subject = event.subject.clone();
        let key = subject.clone();
        let stored = app
            .db_untracked(move |s| s.chat_message(SINK, &key))
            .await
            .map_err(|e| DeliveryError::Retry(format!("store: {e}")))?
            .and_then(|t| serde_json::from_str::<Stored>(&t).ok());
        let Some(r) = render(app, event).await? else {
            return Ok(());
        };
        let sha = digest(&r.message);
        match stored {
            Some(s) if s.sha256 == sha => Ok(()),
            Some(s) => {
                let res = self
                    .slack
                    .update_message(&s.at, &r.message.text, &r.message.blocks)
                    .await;
                self.check(res, &subject).await?;
                remember(app, &subject, s.at, sha).await
            }
            None if !r.announce => Ok(()),
            None => {
                let catalog = app.service_catalog();
                let channel = r
                    .service
                    .as_ref()
                    .and_then(|s| catalog.get(s))
                    .and_then(|s| s.slack_channel.clone())
                    .or_else(|| self.slack.default_channel.clone());
                let Some(channel) = channel else {
                    tracing::info!(subject, service = ?r.service.as_ref().map(|s| s.to_string()),
                        "no Slack channel for this subject (no service slack_channel and no [notify.slack] channel); not posted");
                    return Ok(());
                };
                let res = self
                    .slack
                    .post_message(&channel, &r.message.text, &r.message.blocks)
                    .await;
                let at = self.check(res, &subject).await?;
                tracing::info!(subject, channel, ts = at.ts, "Slack message posted");
                remember(app, &subject, at, sha).await
            }
        }
    }
}

impl SlackNotifier {
    /// Waits out a `Retry-After`, then classifies a failure.
    async fn check<T>(
        &self,
        res: Result<T, SlackError>,
        subject: &str,
    ) -> Result<T, DeliveryError> {
        match res {
            Ok(v) => Ok(v),
            Err(e) => {
                pause_for(&e).await;
                Err(self.failed(e, subject))
            }
        }
    }

    /// Turns a Slack failure into a delivery outcome, with a hint for the operator.
    fn failed(&self, e: SlackError, subject: &str) -> DeliveryError {
        match e {
            SlackError::Temporary { .. } => DeliveryError::Retry(e.to_string()),
            SlackError::Permanent { ref error, .. } => {
                let code = error.split(' ').next().unwrap_or_default();
                let hint = match code {
                    // Configuration errors hold every message back until fixed, rather than losing them.
                    "not_authed" | "invalid_auth" | "account_inactive" | "token_revoked"
                    | "token_expired" | "missing_scope" | "not_allowed_token_type" => {
                        return DeliveryError::Retry(format!(
                            "{e}: check [notify.slack] bot_token and that the Slack app has the chat:write scope"
                        ));
                    }
                    "channel_not_found" | "not_in_channel" | "is_archived" => {
                        " — invite the airlock app to the channel (`/invite @airlock`) or fix the service's slack_channel / [notify.slack] channel"
                    }
                    "message_not_found" | "cant_update_message" | "edit_window_closed" => {
                        " — the message was deleted or cannot be edited; later events of this subject will not show in Slack"
                    }
                    _ => "",
                };
                DeliveryError::Drop(format!("{e} for {subject}{hint}"))
            }
        }
    }
}

/// Honours Slack's `Retry-After` (bounded) before the dispatcher retries.
pub async fn pause_for(e: &SlackError) {
    if let SlackError::Temporary {
        retry_after: Some(s),
        ..
    } = e
    {
        tokio::time::sleep(Duration::from_secs(*s).min(MAX_RETRY_AFTER)).await;
    }
}

async fn remember(
    app: &Arc<Service>,
    subject: &str,
    at: Posted,
    sha256: String,
) -> Result<(), DeliveryError> {
    let text = serde_json::to_string(&Stored { at, sha256 }).expect("serialisable");
    let subject = subject.to_string();
    app.db_untracked(move |s| s.put_chat_message(SINK, &subject, &text))
        .await
        .map_err(|e| DeliveryError::Retry(format!("store: {e}")))
}

fn digest(m: &Message) -> String {
    let mut h = Sha256::new();
    h.update(m.text.as_bytes());
    h.update([0]);
    h.update(m.blocks.to_string().as_bytes());
    hex::encode(h.finalize())
}

/// The current message for the event's subject; `None` when there is nothing to show.
async fn render(app: &Arc<Service>, event: &AuditEvent) -> Result<Option<Rendered>, DeliveryError> {
    let store_err = |e: crate::ServiceError| DeliveryError::Retry(format!("store: {e}"));
    if let Some(id) = event.subject.strip_prefix("request:") {
        let id = RequestId::parse(id)
            .map_err(|e| DeliveryError::Drop(format!("bad subject {}: {e}", event.subject)))?;
        let Some(r) = app
            .db_untracked(move |s| s.get_request(&id))
            .await
            .map_err(store_err)?
        else {
            return Ok(None);
        };
        let ent = app.config.entitlements.get(&r.entitlement);
        let (rule, service, description, needs_review) = match ent {
            Some(e) => (
                app.approval_rule(&e.approvals, e.service.as_ref()),
                e.service.clone(),
                e.description.clone(),
                e.approvals.count > 0,
            ),
            None => (
                airlock_core::approval::ApprovalRule {
                    count: 0,
                    reviewers: vec![],
                },
                None,
                String::new(),
                false,
            ),
        };
        let announce = event.kind == "request.created" && (r.breakglass || needs_review);
        return Ok(Some(Rendered {
            message: blocks::request_message(&r, &rule, &description),
            service,
            announce,
        }));
    }
    if let Some(id) = event.subject.strip_prefix("run:") {
        let id = RunId::parse(id)
            .map_err(|e| DeliveryError::Drop(format!("bad subject {}: {e}", event.subject)))?;
        let Some(run) = app
            .db_untracked(move |s| s.get_run(&id))
            .await
            .map_err(store_err)?
        else {
            return Ok(None);
        };
        let service = super::run_service(app, &run);
        let announce = event.kind == "run.created" && run.approvals.count > 0;
        return Ok(Some(Rendered {
            message: blocks::run_message(&run),
            service,
            announce,
        }));
    }
    Ok(None)
}
