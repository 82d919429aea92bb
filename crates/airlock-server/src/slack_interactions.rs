//! `POST /api/v1/slack/interactions`: Approve/Deny button clicks from Slack.
//! The request is authenticated by Slack's signature (HMAC-SHA256 of
//! `v0:{timestamp}:{raw body}` with the signing secret, timestamps within five
//! minutes); the clicking Slack user is mapped to an airlock principal
//! (`[[user]] slack_id`, else the profile email from `users.info`); the
//! decision then goes through exactly the API's review code. Slack gets its
//! 200 at once; the clicker learns the outcome through the `response_url`.

use std::sync::Arc;

use airlock_core::notify::{signatures_equal, slack_signature};
use airlock_core::request::{RequestId, ReviewDecision};
use airlock_core::run::RunId;
use airlock_core::{Principal, UserName};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use crate::app::App;
use crate::problem::ApiError;
use airlock_service::notify::slack::api::{Slack, SlackEmail, SlackError};
use airlock_service::notify::slack::blocks::{
    APPROVE_REQUEST, APPROVE_RUN, DENY_REQUEST, DENY_RUN,
};
use airlock_service::surface::Surface;

/// Oldest (and furthest in the future) accepted `X-Slack-Request-Timestamp`, in seconds.
pub const MAX_SKEW_SECS: i64 = 5 * 60;
/// Header carrying the request timestamp.
pub const TIMESTAMP_HEADER: &str = "x-slack-request-timestamp";
/// Header carrying the signature.
pub const SIGNATURE_HEADER: &str = "x-slack-signature";

/// Why a callback was not accepted as coming from Slack.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("missing or malformed X-Slack-Request-Timestamp header")]
    BadTimestamp,
    #[error("X-Slack-Request-Timestamp is more than 5 minutes away from the server clock (a replay, or a wrong clock)")]
    Stale,
    #[error("missing or malformed X-Slack-Signature header (expected `v0=<hex>`)")]
    BadSignature,
    #[error("X-Slack-Signature does not match: check [notify.slack] signing_secret")]
    Mismatch,
}

/// Checks Slack's request signature and freshness against `now` (unix seconds).
pub fn verify(
    secret: &[u8],
    timestamp: Option<&str>,
    signature: Option<&str>,
    body: &[u8],
    now: i64,
) -> Result<(), SignatureError> {
    let ts_text = timestamp
        .filter(|t| !t.is_empty() && t.len() <= 12 && t.bytes().all(|b| b.is_ascii_digit()))
        .ok_or(SignatureError::BadTimestamp)?;
    let ts: i64 = ts_text.parse().map_err(|_| SignatureError::BadTimestamp)?;
    if (now - ts).abs() > MAX_SKEW_SECS {
        return Err(SignatureError::Stale);
    }
    let given = signature
        .filter(|s| s.starts_with("v0=") && s.len() == 67)
        .ok_or(SignatureError::BadSignature)?;
    if !signatures_equal(given, &slack_signature(secret, ts_text, body)) {
        return Err(SignatureError::Mismatch);
    }
    Ok(())
}

/// A Slack interaction payload as the handler reads it (fields stay private).
#[derive(Deserialize)]
pub struct Payload {
    #[serde(rename = "type")]
    kind: String,
    user: Option<SlackUser>,
    team: Option<SlackId>,
    enterprise: Option<SlackId>,
    #[serde(default)]
    actions: Vec<Action>,
    response_url: Option<String>,
}

#[derive(Deserialize)]
struct SlackUser {
    id: String,
    /// The member's own workspace; differs from `team` for Slack Connect members.
    team_id: Option<String>,
}

#[derive(Deserialize)]
struct SlackId {
    id: Option<String>,
}

/// Refuses clicks from another workspace or organisation, and from external
/// (Slack Connect) members: only our own workspace's people review.
fn check_workspace(
    slack: &Slack,
    team: Option<&SlackId>,
    enterprise: Option<&SlackId>,
    user: &SlackUser,
) -> Result<(), Refusal> {
    let team = team.and_then(|t| t.id.as_deref());
    if team != Some(slack.team_id.as_str()) {
        return Err(format!(
            "this click came from Slack workspace {} but airlock takes reviews only from {} ([notify.slack] team_id)",
            team.unwrap_or("(none)"),
            slack.team_id
        ).into());
    }
    if user.team_id.as_deref().is_some_and(|t| t != slack.team_id) {
        return Err("external (Slack Connect) members cannot review in airlock".into());
    }
    let enterprise = enterprise.and_then(|e| e.id.as_deref());
    if enterprise.is_some() && enterprise != slack.enterprise_id.as_deref() {
        return Err(format!(
            "this click came from Enterprise Grid organisation {} which is not [notify.slack] enterprise_id",
            enterprise.unwrap_or_default()
        ).into());
    }
    Ok(())
}

#[derive(Deserialize)]
struct Action {
    action_id: String,
    value: Option<String>,
}

/// The handler: verify, parse, answer 200 at once, decide in the background.
pub async fn handle(State(app): State<Arc<App>>, headers: HeaderMap, body: Bytes) -> Response {
    let Some(slack) = app.slack.clone() else {
        return ApiError::new(
            StatusCode::NOT_FOUND,
            "Slack is not configured on this server: add [notify.slack] to the configuration",
        )
        .into_response();
    };
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let now = app.now().unix_timestamp();
    if let Err(e) = verify(
        slack.signing_secret(),
        header(TIMESTAMP_HEADER),
        header(SIGNATURE_HEADER),
        &body,
        now,
    ) {
        tracing::warn!(error = %e, "Slack interaction refused");
        return ApiError::unauthorized(e.to_string()).into_response();
    }
    let payload = match parse(&body) {
        Ok(p) => p,
        Err(why) => return ApiError::new(StatusCode::BAD_REQUEST, why.0).into_response(),
    };
    if payload.kind != "block_actions" {
        // Nothing else is configured in the Slack app; acknowledge and ignore.
        return StatusCode::OK.into_response();
    }
    tokio::spawn(async move {
        let response_url = payload.response_url.clone();
        let text = decide(&app, &slack, payload).await;
        if let Some(url) = response_url {
            if let Err(e) = slack.respond(&url, &text).await {
                tracing::warn!(error = %e, "could not tell the Slack user the outcome");
            }
        }
    });
    StatusCode::OK.into_response()
}

/// Why a click or a callback is refused; the text is shown to the clicker
/// (or is the 400's reason) and says what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Refusal(pub String);

impl From<String> for Refusal {
    fn from(s: String) -> Self {
        Refusal(s)
    }
}

impl From<&str> for Refusal {
    fn from(s: &str) -> Self {
        Refusal(s.to_string())
    }
}

/// The `payload` form field, as JSON (public for the fuzzer; `Err` is the 400's reason).
pub fn parse(body: &[u8]) -> Result<Payload, Refusal> {
    let text = std::str::from_utf8(body).map_err(|_| "body is not UTF-8".to_string())?;
    let raw = form_value(text, "payload")
        .ok_or_else(|| "body must be a form with a `payload` field, as Slack sends".to_string())?;
    serde_json::from_str(&raw)
        .map_err(|e| Refusal(format!("payload is not a Slack interaction: {e}")))
}

/// Decodes one field of an `application/x-www-form-urlencoded` body.
pub fn form_value(body: &str, key: &str) -> Option<String> {
    body.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (percent_decode(k)? == key)
            .then(|| percent_decode(v))
            .flatten()
    })
}

fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 2;
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

/// Maps the user, applies the review, and says what happened (for the clicker).
async fn decide(app: &Arc<App>, slack: &Slack, payload: Payload) -> String {
    let Some(user) = payload.user.filter(|u| is_member_id(&u.id)) else {
        return "airlock could not tell who clicked (no Slack user in the payload)".into();
    };
    if let Err(why) = check_workspace(
        slack,
        payload.team.as_ref(),
        payload.enterprise.as_ref(),
        &user,
    ) {
        tracing::warn!(slack_user = user.id, why = %why, "Slack review refused");
        return format!(":no_entry: {why}");
    }
    let Some(action) = payload.actions.into_iter().next() else {
        return "airlock got a click without an action".into();
    };
    let value = action.value.unwrap_or_default();
    let (is_run, decision) = match action.action_id.as_str() {
        APPROVE_REQUEST => (false, ReviewDecision::Approve),
        DENY_REQUEST => (false, ReviewDecision::Deny),
        APPROVE_RUN => (true, ReviewDecision::Approve),
        DENY_RUN => (true, ReviewDecision::Deny),
        other => {
            return format!(
                "airlock does not know the button `{}`",
                other.escape_default()
            );
        }
    };
    let who = match principal(app, slack, &user.id).await {
        Ok(p) => p,
        Err(why) => {
            tracing::warn!(slack_user = user.id, why = %why, "Slack review refused");
            return format!(":no_entry: {why}");
        }
    };
    let verb = decision.as_str();
    let outcome = async {
        use airlock_service::{lifecycle, proxy::review as runs};
        let (svc, via) = (&app.svc, Surface::Slack);
        let state = if is_run {
            let r = runs::review(svc, &who, RunId::parse(&value)?, decision, None, via).await?;
            format!("run `{}` is now *{}*", r.id, r.state.as_str())
        } else {
            let id = RequestId::parse(&value)?;
            let r = lifecycle::review(svc, &who, id, decision, None, via).await?;
            format!("request `{}` is now *{}*", r.id, r.state)
        };
        Ok::<_, airlock_service::ServiceError>(state)
    }
    .await
    .map_err(ApiError::from);
    match outcome {
        Ok(state) => {
            tracing::info!(slack_user = user.id, user = %who.name, decision = verb, value, "review from Slack");
            format!(
                ":white_check_mark: {}: your review ({verb}) was recorded; {state}",
                who.name
            )
        }
        Err(e) => {
            tracing::warn!(slack_user = user.id, user = %who.name, decision = verb, value, error = e.detail, "Slack review refused");
            format!(
                ":no_entry: airlock refused your review ({verb}): {}",
                e.detail
            )
        }
    }
}

fn is_member_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 32 && id.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// The airlock principal behind Slack user `id`: `[[user]] slack_id` first,
/// else the Slack profile email matched against `[[user]] email`.
async fn principal(app: &Arc<App>, slack: &Slack, id: &str) -> Result<Principal, Refusal> {
    let by_id = app
        .config
        .users
        .values()
        .find(|u| u.slack_id.as_deref() == Some(id))
        .map(|u| u.name.clone());
    let name: UserName = match by_id {
        Some(n) => n,
        None => {
            let email = match slack.user_email(id).await {
                Ok(e) => e,
                Err(e @ SlackError::Temporary { .. }) => {
                    return Err(format!("airlock could not ask Slack who you are ({e}); try again in a minute").into())
                }
                Err(e) => return Err(format!("airlock could not ask Slack who you are ({e}): the Slack app needs users:read and users:read.email").into()),
            };
            let email = match email {
                SlackEmail::Confirmed(e) => e,
                SlackEmail::Unusable(why) => {
                    return Err(format!(
                        "airlock cannot map Slack user {id} by email ({why}): ask an admin to add `slack_id = \"{id}\"` to your [[user]] entry"
                    ).into())
                }
            };
            let found = app
                .config
                .users
                .values()
                .find(|u| {
                    u.email
                        .as_deref()
                        .is_some_and(|m| m.eq_ignore_ascii_case(&email))
                })
                .map(|u| u.name.clone());
            found.ok_or_else(|| {
                format!(
                    "airlock does not know Slack user {id}: ask an admin to add `slack_id = \"{id}\"` to your [[user]] entry, or use the same email in Slack and airlock"
                )
            })?
        }
    };
    // A Slack click proves no multi-factor login: `mfa` stays false, so
    // entitlements and policies that demand MFA refuse it, as they would a plain token.
    Ok(app.config.principal(name, &[], false))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"8f742231b10e8888abcd99yyyzzz85a5";

    #[test]
    fn a_correct_fresh_signature_is_accepted() {
        let sig = slack_signature(SECRET, "1700000000", b"payload=x");
        assert_eq!(
            verify(
                SECRET,
                Some("1700000000"),
                Some(&sig),
                b"payload=x",
                1_700_000_100
            ),
            Ok(())
        );
    }

    #[test]
    fn a_signature_over_another_body_or_with_another_secret_is_refused() {
        let sig = slack_signature(SECRET, "1700000000", b"payload=x");
        assert_eq!(
            verify(
                SECRET,
                Some("1700000000"),
                Some(&sig),
                b"payload=y",
                1_700_000_000
            ),
            Err(SignatureError::Mismatch)
        );
        let other = slack_signature(b"another", "1700000000", b"payload=x");
        assert_eq!(
            verify(
                SECRET,
                Some("1700000000"),
                Some(&other),
                b"payload=x",
                1_700_000_000
            ),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn timestamps_more_than_five_minutes_old_or_ahead_are_refused_even_when_signed() {
        for ts in ["1699999699", "1700000301"] {
            let sig = slack_signature(SECRET, ts, b"b");
            assert_eq!(
                verify(SECRET, Some(ts), Some(&sig), b"b", 1_700_000_000),
                Err(SignatureError::Stale),
                "{ts}"
            );
        }
        let sig = slack_signature(SECRET, "1699999700", b"b");
        assert_eq!(
            verify(SECRET, Some("1699999700"), Some(&sig), b"b", 1_700_000_000),
            Ok(())
        );
    }

    #[test]
    fn the_timestamp_is_part_of_what_is_signed() {
        let sig = slack_signature(SECRET, "1700000000", b"b");
        assert_eq!(
            verify(SECRET, Some("1700000001"), Some(&sig), b"b", 1_700_000_000),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn missing_or_malformed_headers_are_refused() {
        let sig = slack_signature(SECRET, "1700000000", b"b");
        let now = 1_700_000_000;
        assert_eq!(
            verify(SECRET, None, Some(&sig), b"b", now),
            Err(SignatureError::BadTimestamp)
        );
        assert_eq!(
            verify(SECRET, Some("-5"), Some(&sig), b"b", now),
            Err(SignatureError::BadTimestamp)
        );
        assert_eq!(
            verify(SECRET, Some("1700000000"), None, b"b", now),
            Err(SignatureError::BadSignature)
        );
        let v1 = sig.replacen("v0=", "v1=", 1);
        assert_eq!(
            verify(SECRET, Some("1700000000"), Some(&v1), b"b", now),
            Err(SignatureError::BadSignature)
        );
        assert_eq!(
            verify(SECRET, Some("1700000000"), Some(&sig[..40]), b"b", now),
            Err(SignatureError::BadSignature)
        );
    }

    #[test]
    fn form_fields_are_percent_decoded() {
        let body = "token=x&payload=%7B%22type%22%3A+%22block_actions%22%7D";
        assert_eq!(
            form_value(body, "payload").unwrap(),
            r#"{"type": "block_actions"}"#
        );
        assert_eq!(form_value(body, "missing"), None);
        assert_eq!(form_value("payload=%zz", "payload"), None);
    }
}
