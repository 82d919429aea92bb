//! A small Slack Web API client: `chat.postMessage`, `chat.update`,
//! `users.info` and posts to an interaction's `response_url`. It only talks
//! HTTP and classifies failures (temporary or permanent); what to post is
//! decided elsewhere.

use std::path::Path;
use std::time::Duration;

use airlock_core::notify::{secret_source, SlackConfig};
use serde_json::{json, Value};

use crate::notify::read_secret;

/// Longest wait honoured from a `Retry-After` header before giving up this attempt.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(30);
/// Per-call timeout.
const TIMEOUT: Duration = Duration::from_secs(10);
/// Largest Slack response read.
const MAX_RESPONSE: usize = 1024 * 1024;

/// Why a Slack call failed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SlackError {
    /// Worth trying again later: network error, 5xx, 429 (`retry_after` seconds if Slack said).
    #[error("Slack {method} failed temporarily: {why}")]
    Temporary {
        method: String,
        why: String,
        retry_after: Option<u64>,
    },
    /// Will fail the same way again (`channel_not_found`, `invalid_blocks`, `invalid_auth`, …).
    #[error("Slack {method} refused: {error}")]
    Permanent { method: String, error: String },
}

/// The Slack side of airlock: bot token, signing secret, where the API is.
pub struct Slack {
    token: String,
    signing_secret: String,
    api_base: String,
    /// Channel for entitlements and operations without a service channel.
    pub default_channel: Option<String>,
    /// The workspace whose members' clicks count (`[notify.slack] team_id`).
    pub team_id: String,
    /// The Enterprise Grid organisation, if configured.
    pub enterprise_id: Option<String>,
    http: reqwest::Client,
}

/// What users.info says about mapping a member by email.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SlackEmail {
    /// A confirmed email of a member of our workspace.
    Confirmed(String),
    /// No email airlock may trust, and why.
    Unusable(&'static str),
}

/// Where a posted message lives.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Posted {
    /// Channel id (`C…`), as Slack answered.
    pub channel: String,
    /// Message timestamp, its id within the channel.
    pub ts: String,
}

/// The email of a users.info `user` object, only if airlock may map a person
/// by it: an active human member of `team_id` whose address is confirmed
/// (an unconfirmed or foreign address could be anyone's).
pub fn trusted_email(user: &serde_json::Value, team_id: &str) -> SlackEmail {
    if user["deleted"].as_bool() == Some(true) || user["is_bot"].as_bool() == Some(true) {
        return SlackEmail::Unusable("the Slack member is deactivated or a bot");
    }
    if user["is_stranger"].as_bool() == Some(true) || user["team_id"].as_str() != Some(team_id) {
        return SlackEmail::Unusable("the Slack member belongs to another workspace");
    }
    if user["is_email_confirmed"].as_bool() != Some(true) {
        return SlackEmail::Unusable("the Slack member's email is not confirmed");
    }
    match user["profile"]["email"].as_str().filter(|e| !e.is_empty()) {
        Some(e) => SlackEmail::Confirmed(e.to_string()),
        None => SlackEmail::Unusable("the Slack member shows no email"),
    }
}

impl Slack {
    /// Reads `[notify.slack]` (secrets from files now); `None` when Slack is not configured.
    pub fn from_config(
        config: &airlock_core::config::Config,
        config_dir: &Path,
    ) -> Result<Option<Slack>, crate::SetupError> {
        let Some(c) = &config.notify.slack else {
            return Ok(None);
        };
        Self::new(c, config_dir).map(Some)
    }

    fn new(c: &SlackConfig, config_dir: &Path) -> Result<Slack, crate::SetupError> {
        let ctx = "[notify.slack]";
        let secret = |key: &str, inline: Option<&String>, file: Option<&String>| {
            let src = secret_source(ctx, key, inline, file, true)
                .map_err(|e| e.to_string())?
                .ok_or_else(|| format!("{ctx}: `{key}` is required"))?;
            read_secret(config_dir, &src).map_err(|e| format!("{ctx} {key}: {e}"))
        };
        let token = secret("bot_token", c.bot_token.as_ref(), c.bot_token_file.as_ref())?;
        let signing_secret = secret(
            "signing_secret",
            c.signing_secret.as_ref(),
            c.signing_secret_file.as_ref(),
        )?;
        let http = reqwest::Client::builder()
            .timeout(TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("airlock/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("{ctx}: cannot build an HTTP client: {e}"))?;
        Ok(Slack {
            token,
            signing_secret,
            api_base: c.api_base.trim_end_matches('/').to_string(),
            default_channel: c.channel.clone(),
            team_id: c.team_id.clone().unwrap_or_default(),
            enterprise_id: c.enterprise_id.clone(),
            http,
        })
    }

    /// The signing secret that authenticates interaction callbacks.
    pub fn signing_secret(&self) -> &[u8] {
        self.signing_secret.as_bytes()
    }

    /// Posts a message; returns where it went (the channel id, not the name given).
    pub async fn post_message(
        &self,
        channel: &str,
        text: &str,
        blocks: &Value,
    ) -> Result<Posted, SlackError> {
        let body =
            json!({"channel": channel, "text": text, "blocks": blocks, "unfurl_links": false});
        let v = self.call("chat.postMessage", body).await?;
        posted("chat.postMessage", &v)
    }

    /// Replaces a message's text and blocks in place.
    pub async fn update_message(
        &self,
        at: &Posted,
        text: &str,
        blocks: &Value,
    ) -> Result<(), SlackError> {
        let body = json!({"channel": at.channel, "ts": at.ts, "text": text, "blocks": blocks});
        self.call("chat.update", body).await.map(|_| ())
    }

    /// The profile email of Slack user `user_id` (needs `users:read.email`),
    /// if it may map them to an airlock user (see [`trusted_email`]).
    pub async fn user_email(&self, user_id: &str) -> Result<SlackEmail, SlackError> {
        // users.info takes form or query arguments, not JSON.
        let req = self
            .http
            .get(format!("{}/users.info", self.api_base))
            .query(&[("user", user_id)]);
        match self.send("users.info", req).await {
            Ok(v) => Ok(trusted_email(&v["user"], &self.team_id)),
            Err(SlackError::Permanent { error, .. }) if error == "user_not_found" => {
                Ok(SlackEmail::Unusable("Slack does not know this member"))
            }
            Err(e) => Err(e),
        }
    }

    /// Whether `url` may receive an interaction reply: Slack's hooks host, or
    /// the host the API lives at (a test emulation). Defence in depth: the
    /// URL came in a signed payload, but airlock never posts anywhere else.
    pub fn response_url_allowed(&self, url: &str) -> bool {
        let origin = |u: &str| -> Option<String> {
            let (scheme, rest) = u.split_once("://")?;
            let host = rest.split('/').next()?;
            (!host.is_empty() && !host.contains('@')).then(|| format!("{scheme}://{host}"))
        };
        match origin(url) {
            Some(o) => o == "https://hooks.slack.com" || Some(o) == origin(&self.api_base),
            None => false,
        }
    }

    /// Tells the person who clicked, privately (an ephemeral reply).
    pub async fn respond(&self, response_url: &str, text: &str) -> Result<(), SlackError> {
        let method = "response_url";
        if !self.response_url_allowed(response_url) {
            return Err(SlackError::Permanent {
                method: method.into(),
                error: format!("response_url `{response_url}` is not a Slack hooks URL"),
            });
        }
        let body = json!({"response_type": "ephemeral", "replace_original": false, "text": text});
        let resp = self
            .http
            .post(response_url)
            .json(&body)
            .send()
            .await
            .map_err(|e| temporary(method, e.to_string(), None))?;
        let status = resp.status();
        if status.is_success() {
            Ok(())
        } else if status.is_server_error() || status.as_u16() == 429 {
            Err(temporary(method, format!("HTTP {status}"), None))
        } else {
            Err(SlackError::Permanent {
                method: method.into(),
                error: format!("HTTP {status}"),
            })
        }
    }

    /// One Web API call with a JSON body.
    async fn call(&self, method: &str, body: Value) -> Result<Value, SlackError> {
        let req = self
            .http
            .post(format!("{}/{method}", self.api_base))
            .header("Content-Type", "application/json; charset=utf-8")
            .body(body.to_string());
        self.send(method, req).await
    }

    /// Sends with the bot token as bearer and classifies the answer.
    async fn send(&self, method: &str, req: reqwest::RequestBuilder) -> Result<Value, SlackError> {
        let resp = req
            .bearer_auth(&self.token)
            .send()
            .await
            .map_err(|e| temporary(method, format!("cannot reach Slack: {e}"), None))?;
        let status = resp.status();
        let retry_after = resp
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| temporary(method, format!("reading the answer: {e}"), None))?;
        if status.as_u16() == 429 {
            return Err(temporary(
                method,
                "rate limited (HTTP 429)".into(),
                retry_after,
            ));
        }
        if status.is_server_error() {
            return Err(temporary(method, format!("HTTP {status}"), retry_after));
        }
        if bytes.len() > MAX_RESPONSE {
            return Err(temporary(method, "answer too large".into(), None));
        }
        let v: Value = serde_json::from_slice(&bytes).map_err(|_| {
            if status.is_success() {
                temporary(
                    method,
                    format!("HTTP {status} with a non-JSON answer"),
                    None,
                )
            } else {
                SlackError::Permanent {
                    method: method.into(),
                    error: format!("HTTP {status}"),
                }
            }
        })?;
        if v["ok"].as_bool() == Some(true) {
            return Ok(v);
        }
        let error = v["error"].as_str().unwrap_or("unknown_error").to_string();
        if matches!(
            error.as_str(),
            "ratelimited"
                | "rate_limited"
                | "internal_error"
                | "fatal_error"
                | "service_unavailable"
                | "request_timeout"
        ) {
            return Err(temporary(method, error, retry_after));
        }
        let detail = v["errors"]
            .as_array()
            .map(|e| {
                e.iter()
                    .filter_map(Value::as_str)
                    .take(5)
                    .collect::<Vec<_>>()
                    .join("; ")
            })
            .filter(|s| !s.is_empty());
        Err(SlackError::Permanent {
            method: method.into(),
            error: match detail {
                Some(d) => format!("{error} ({d})"),
                None => error,
            },
        })
    }
}

fn temporary(method: &str, why: String, retry_after: Option<u64>) -> SlackError {
    SlackError::Temporary {
        method: method.into(),
        why,
        retry_after,
    }
}

fn posted(method: &str, v: &Value) -> Result<Posted, SlackError> {
    match (v["channel"].as_str(), v["ts"].as_str()) {
        (Some(c), Some(t)) if !c.is_empty() && !t.is_empty() => Ok(Posted {
            channel: c.into(),
            ts: t.into(),
        }),
        _ => Err(SlackError::Permanent {
            method: method.into(),
            error: "answer has no channel and ts".into(),
        }),
    }
}
