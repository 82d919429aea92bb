//! `[[notify.webhook]]`: every selected audit event POSTed as JSON to one
//! endpoint, signed with HMAC-SHA256 (`X-Airlock-Signature`) and keyed by its
//! sequence number (`X-Airlock-Delivery`). Only the HTTP exchange and the
//! mapping of answers to retry/drop live here; order and persistence are the
//! dispatcher's (see [`super`]).

use std::sync::Arc;
use std::time::Duration;

use airlock_core::audit_chain::AuditEvent;
use airlock_core::notify::{event_matches, webhook_signature, WebhookConfig};

use super::{DeliveryError, Notifier};
use crate::Service;

/// Kind of the deliveries that carry signed tree heads (not chain events).
pub const CHECKPOINT_KIND: &str = "audit.checkpoint";

/// Longest wait for the TCP (and TLS) connection to a receiver.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest wait for a whole delivery (connect, send, answer).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest `Retry-After` honoured; longer asks are capped so one receiver
/// cannot park its sink for hours.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(300);
/// At most this much of a receiver's answer is read (for the log and so the
/// connection can be reused); the rest is discarded.
const MAX_ANSWER: usize = 4096;

/// One webhook endpoint.
pub struct Webhook {
    sink: String,
    label: String,
    url: String,
    secret: Vec<u8>,
    events: Vec<String>,
    client: reqwest::Client,
}

impl Webhook {
    /// A notifier for `config` named `label` (metrics, logs), with its secret already read.
    pub fn new(
        config: &WebhookConfig,
        label: String,
        secret: String,
    ) -> Result<Webhook, crate::SetupError> {
        let url = reqwest::Url::parse(&config.url)
            .map_err(|e| format!("[[notify.webhook]] `{}`: bad url: {e}", config.url))?;
        if url.host_str().is_none_or(str::is_empty) {
            return Err(format!("[[notify.webhook]] `{}`: url has no host", config.url).into());
        }
        let client = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT)
            // A redirect would turn the POST into a GET elsewhere: treat it
            // as a misconfiguration to fix, not something to follow.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("airlock/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("[[notify.webhook]] `{}`: {e}", config.url))?;
        Ok(Webhook {
            // The cursor key stays the URL, so upgrading keeps each sink's position.
            sink: format!("webhook:{}", config.url),
            label,
            url: config.url.clone(),
            secret: secret.into_bytes(),
            events: config.events.clone(),
            client,
        })
    }
}

#[async_trait::async_trait]
impl Notifier for Webhook {
    fn sink(&self) -> &str {
        &self.sink
    }

    fn label(&self) -> &str {
        &self.label
    }

    fn wants(&self, event: &AuditEvent) -> bool {
        event_matches(&self.events, &event.kind)
    }

    fn wants_checkpoints(&self) -> bool {
        event_matches(&self.events, CHECKPOINT_KIND)
    }

    async fn deliver_checkpoint(
        &self,
        app: &Arc<Service>,
        size: u64,
        note: &str,
    ) -> Result<(), DeliveryError> {
        let body = serde_json::to_vec(&serde_json::json!({
            "kind": CHECKPOINT_KIND, "at": crate::lifecycle::fmt_time(app.now()),
            "size": size, "checkpoint": note,
        }))
        .map_err(|e| DeliveryError::Drop(format!("cannot encode checkpoint: {e}")))?;
        self.post(app, &format!("checkpoint-{size}"), body).await
    }

    async fn deliver(&self, app: &Arc<Service>, event: &AuditEvent) -> Result<(), DeliveryError> {
        // Field order is the contract: seq, kind, at, actor, subject, data, hash.
        let body = serde_json::to_vec(event)
            .map_err(|e| DeliveryError::Drop(format!("cannot encode event: {e}")))?;
        self.post(app, &event.seq.to_string(), body).await
    }
}

impl Webhook {
    /// One signed POST; the answer says whether to retry.
    async fn post(
        &self,
        app: &Arc<Service>,
        delivery: &str,
        body: Vec<u8>,
    ) -> Result<(), DeliveryError> {
        // Signed at each attempt, so receivers can refuse old timestamps (replays).
        let signature = webhook_signature(&self.secret, app.now().unix_timestamp(), &body);
        let answer = self
            .client
            .post(&self.url)
            .header("Content-Type", "application/json")
            .header("X-Airlock-Signature", signature)
            .header("X-Airlock-Delivery", delivery)
            .body(body)
            .send()
            .await;
        let mut response = match answer {
            Ok(r) => r,
            Err(e) => return Err(DeliveryError::Retry(describe(&e))),
        };
        let status = response.status();
        let (code, reason) = (status.as_u16(), status.canonical_reason().unwrap_or(""));
        let retry_after = retry_after(response.headers());
        let mut text = Vec::new();
        while text.len() < MAX_ANSWER {
            match response.chunk().await {
                Ok(Some(c)) => text.extend_from_slice(&c),
                _ => break,
            }
        }
        text.truncate(MAX_ANSWER);
        let text = String::from_utf8_lossy(&text);
        classify(code, reason, retry_after, text.trim())
    }
}

/// What an HTTP answer means for this event. Conservative: only answers that
/// reject *this event's content* drop it (413 too large, 422 unprocessable).
/// Every other 4xx — 400/401/403 (often a wrong secret on the receiver),
/// 404/405/410 (route missing while being redeployed), 3xx — says the
/// receiver is misconfigured for every event alike, so dropping would lose
/// the whole stream: those are retried with backoff until someone fixes it
/// (the lag metric and the log show it).
pub fn classify(
    code: u16,
    reason: &str,
    retry_after: Option<Duration>,
    answer: &str,
) -> Result<(), DeliveryError> {
    let said = if answer.is_empty() {
        String::new()
    } else {
        format!(": {}", answer.chars().take(200).collect::<String>())
    };
    if (200..300).contains(&code) {
        return Ok(());
    }
    let why = format!("receiver answered {code} {reason}{said}");
    match (code, retry_after) {
        (413 | 422, _) => Err(DeliveryError::Drop(why)),
        (429 | 503, Some(after)) => Err(DeliveryError::RetryAfter(why, after.min(MAX_RETRY_AFTER))),
        _ => Err(DeliveryError::Retry(why)),
    }
}

/// `Retry-After` in delta-seconds (the HTTP-date form falls back to backoff).
fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let v = headers.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?;
    v.trim().parse::<u64>().ok().map(Duration::from_secs)
}

/// A network error with its cause chain (reqwest's top level says little).
fn describe(e: &reqwest::Error) -> String {
    let mut s = if e.is_timeout() {
        "timed out".to_string()
    } else if e.is_connect() {
        "cannot connect".to_string()
    } else {
        "request failed".to_string()
    };
    let mut src = std::error::Error::source(e);
    while let Some(c) = src {
        s.push_str(": ");
        s.push_str(&c.to_string());
        src = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(r: Result<(), DeliveryError>) -> &'static str {
        match r {
            Ok(()) => "ok",
            Err(DeliveryError::Retry(_)) => "retry",
            Err(DeliveryError::RetryAfter(_, _)) => "retry-after",
            Err(DeliveryError::Drop(_)) => "drop",
        }
    }

    #[test]
    fn only_answers_about_the_event_itself_drop_it() {
        for (code, want) in [
            (200, "ok"),
            (204, "ok"),
            (301, "retry"),
            (400, "retry"),
            (401, "retry"),
            (403, "retry"),
            (404, "retry"),
            (408, "retry"),
            (410, "retry"),
            (413, "drop"),
            (422, "drop"),
            (429, "retry"),
            (500, "retry"),
            (503, "retry"),
        ] {
            assert_eq!(kind(classify(code, "", None, "")), want, "{code}");
        }
    }

    #[test]
    fn retry_after_is_honoured_but_capped() {
        let r = classify(
            429,
            "Too Many Requests",
            Some(Duration::from_secs(86_400)),
            "slow down",
        );
        match r {
            Err(DeliveryError::RetryAfter(why, after)) => {
                assert_eq!(after, MAX_RETRY_AFTER);
                assert!(why.contains("429") && why.contains("slow down"), "{why}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn sink_id_is_webhook_and_url() {
        let c = WebhookConfig {
            name: None,
            url: "http://127.0.0.1:9/hook".into(),
            secret: Some("s".into()),
            secret_file: None,
            events: vec!["request.*".into()],
        };
        let w = Webhook::new(&c, c.name_at(0), "s".into()).unwrap();
        assert_eq!(w.sink(), "webhook:http://127.0.0.1:9/hook");
        assert_eq!(w.label(), "webhook-1", "metrics never see the URL");
    }
}
