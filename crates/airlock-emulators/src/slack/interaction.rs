//! Interaction callbacks as Slack sends them: a `block_actions` payload,
//! form-encoded as `payload=…`, with `X-Slack-Request-Timestamp` and
//! `X-Slack-Signature` (`v0=` HMAC-SHA256 of `v0:{timestamp}:{body}`).

use serde_json::{json, Value};

use super::TEAM_ID;

/// A callback ready to POST to an interactivity URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedInteraction {
    /// `application/x-www-form-urlencoded` body (`payload=…`).
    pub body: String,
    /// `X-Slack-Request-Timestamp`.
    pub timestamp: String,
    /// `X-Slack-Signature`.
    pub signature: String,
}

impl SignedInteraction {
    /// A click on button `action_id` (carrying `value`) by Slack user
    /// `user_id` on message `message_ts` in `channel`, signed with
    /// `signing_secret` at unix time `timestamp`.
    #[allow(clippy::too_many_arguments)]
    pub fn button_click(
        signing_secret: &str,
        timestamp: i64,
        user_id: &str,
        action_id: &str,
        value: &str,
        channel: &str,
        message_ts: &str,
        response_url: &str,
    ) -> SignedInteraction {
        Self::button_click_in(
            TEAM_ID,
            TEAM_ID,
            signing_secret,
            timestamp,
            user_id,
            action_id,
            value,
            channel,
            message_ts,
            response_url,
        )
    }

    /// [`button_click`](Self::button_click) in workspace `team_id` by a member
    /// of workspace `user_team` (they differ for a Slack Connect member).
    #[allow(clippy::too_many_arguments)]
    pub fn button_click_in(
        team_id: &str,
        user_team: &str,
        signing_secret: &str,
        timestamp: i64,
        user_id: &str,
        action_id: &str,
        value: &str,
        channel: &str,
        message_ts: &str,
        response_url: &str,
    ) -> SignedInteraction {
        let payload = json!({
            "type": "block_actions",
            "user": {"id": user_id, "username": user_id.to_lowercase(), "name": user_id.to_lowercase(), "team_id": user_team},
            "api_app_id": "A0AIRLOCK1",
            "token": "verification-token-is-deprecated",
            "container": {"type": "message", "message_ts": message_ts, "channel_id": channel, "is_ephemeral": false},
            "trigger_id": format!("{timestamp}.1234567890.abcdef"),
            "team": {"id": team_id, "domain": "airlock-test"},
            "enterprise": null,
            "is_enterprise_install": false,
            "channel": {"id": channel, "name": "channel"},
            "message": {"type": "message", "ts": message_ts, "bot_id": super::BOT_ID},
            "response_url": response_url,
            "actions": [{
                "action_id": action_id,
                "block_id": "airlock_review",
                "text": {"type": "plain_text", "text": "Approve", "emoji": true},
                "value": value,
                "type": "button",
                "action_ts": format!("{timestamp}.000100"),
            }],
        });
        Self::sign(signing_secret, timestamp, &payload)
    }

    /// Form-encodes `payload` and signs it at `timestamp`.
    pub fn sign(signing_secret: &str, timestamp: i64, payload: &Value) -> SignedInteraction {
        let body = format!("payload={}", form_encode(&payload.to_string()));
        let ts = timestamp.to_string();
        let signature =
            airlock_core::notify::slack_signature(signing_secret.as_bytes(), &ts, body.as_bytes());
        SignedInteraction {
            body,
            timestamp: ts,
            signature,
        }
    }
}

/// Percent-encodes a form value (`application/x-www-form-urlencoded`).
pub fn form_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'*' => {
                out.push(b as char)
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// Decodes a form or query string; `None` if malformed.
pub(crate) fn form_decode(s: &str) -> Option<Vec<(String, String)>> {
    s.split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            Some((decode(k)?, decode(v)?))
        })
        .collect()
}

fn decode(s: &str) -> Option<String> {
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
