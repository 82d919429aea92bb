//! `[notify]`: where airlock tells people and systems what happened — Slack,
//! signed webhooks, email. Parsing and pure helpers only (event filters,
//! signatures); delivery lives in the server's notifier.

use hmac::{Hmac, Mac};
use serde::Deserialize;
use sha2::Sha256;

/// `[notify]` table.
#[derive(Deserialize, Debug, Clone, Default)]
#[serde(deny_unknown_fields)]
pub struct NotifyConfig {
    /// `[notify.slack]`: Block Kit messages with Approve/Deny buttons.
    pub slack: Option<SlackConfig>,
    /// `[[notify.webhook]]`: every matching audit event POSTed, signed.
    #[serde(default)]
    pub webhook: Vec<WebhookConfig>,
    /// `[notify.email]`: reviewers emailed over SMTP.
    pub email: Option<EmailConfig>,
}

/// A secret given inline or in a file (relative to the configuration file).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    /// Written in the configuration.
    Inline(String),
    /// Read from this file at start-up (trailing newline trimmed).
    File(String),
}

/// Chooses between `key` and `key_file`: exactly one must be set when `required`.
pub fn secret_source(
    ctx: &str,
    key: &str,
    inline: Option<&String>,
    file: Option<&String>,
    required: bool,
) -> Result<Option<SecretSource>, crate::config::ConfigError> {
    match (inline, file) {
        (Some(_), Some(_)) => Err(crate::config::ConfigError::Invalid(format!(
            "{ctx}: set `{key}` or `{key}_file`, not both"
        ))),
        (Some(s), None) if s.is_empty() => Err(crate::config::ConfigError::Invalid(format!(
            "{ctx}: `{key}` is empty"
        ))),
        (Some(s), None) => Ok(Some(SecretSource::Inline(s.clone()))),
        (None, Some(f)) => Ok(Some(SecretSource::File(f.clone()))),
        (None, None) if required => Err(crate::config::ConfigError::Invalid(format!(
            "{ctx}: `{key}` (or `{key}_file`) is required"
        ))),
        (None, None) => Ok(None),
    }
}

/// `[notify.slack]`.
#[derive(Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub struct SlackConfig {
    /// Bot token (`xoxb-…`) used for chat.postMessage / chat.update / users.info.
    pub bot_token: Option<String>,
    /// File holding the bot token instead.
    pub bot_token_file: Option<String>,
    /// Signing secret that verifies interaction callbacks.
    pub signing_secret: Option<String>,
    /// File holding the signing secret instead.
    pub signing_secret_file: Option<String>,
    /// Web API base URL (tests point it at a local emulation).
    #[serde(default = "default_slack_api_base")]
    pub api_base: String,
    /// Channel for entitlements and operations without a service channel.
    pub channel: Option<String>,
    /// The workspace (`T…`) whose members may click Approve/Deny; clicks from
    /// any other team, and from external (Slack Connect) users, are refused.
    pub team_id: Option<String>,
    /// Enterprise Grid organisation (`E…`) the workspace belongs to, if any.
    pub enterprise_id: Option<String>,
}

/// Whether `id` looks like a Slack id (`T…`, `E…`, `U…`): uppercase letters and digits.
pub fn is_slack_id(id: &str, first: char) -> bool {
    id.len() >= 2
        && id.len() <= 32
        && id.starts_with(first)
        && id
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
}

fn default_slack_api_base() -> String {
    "https://slack.com/api".into()
}

/// `[[notify.webhook]]`.
#[derive(Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// Name in metrics and logs (default `webhook-N` by position): the URL may be a secret.
    pub name: Option<String>,
    /// Receiver URL (http or https).
    pub url: String,
    /// HMAC-SHA256 key for `X-Airlock-Signature`.
    pub secret: Option<String>,
    /// File holding the key instead.
    pub secret_file: Option<String>,
    /// Audit event kinds to send (`request.*`, `run.finished`, `*`); default: all.
    #[serde(default = "all_events")]
    pub events: Vec<String>,
}

impl WebhookConfig {
    /// The non-secret name of the webhook at `position` (from 0) of `[[notify.webhook]]`.
    pub fn name_at(&self, position: usize) -> String {
        self.name
            .clone()
            .unwrap_or_else(|| format!("webhook-{}", position + 1))
    }
}

fn all_events() -> Vec<String> {
    vec!["*".into()]
}

/// How the SMTP connection is secured.
#[derive(Deserialize, Debug, Clone, Copy, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum SmtpSecurity {
    /// Plain connection upgraded with STARTTLS (required, not opportunistic).
    #[default]
    Starttls,
    /// TLS from the first byte (port 465).
    Tls,
    /// No TLS: only for a relay on loopback.
    None,
}

/// `[notify.email]`.
#[derive(Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub struct EmailConfig {
    /// SMTP server host name.
    pub host: String,
    /// Port (default: 587 for starttls, 465 for tls, 25 for none).
    pub port: Option<u16>,
    /// `starttls` (default), `tls` or `none`.
    #[serde(default)]
    pub security: SmtpSecurity,
    /// SMTP AUTH user.
    pub username: Option<String>,
    /// SMTP AUTH password.
    pub password: Option<String>,
    /// File holding the password instead.
    pub password_file: Option<String>,
    /// Sender address.
    pub from: String,
    /// Recipients when neither a service address nor reviewer emails are known.
    #[serde(default)]
    pub to: Vec<String>,
    /// PEM file of a private CA that signed the SMTP server's certificate
    /// (added to the public roots), relative to the configuration file.
    pub ca_file: Option<String>,
}

impl NotifyConfig {
    /// Checks what parsing alone cannot (URLs, addresses, secrets given once).
    pub fn validate(&self) -> Result<(), crate::config::ConfigError> {
        let bad = |m: String| crate::config::ConfigError::Invalid(m);
        if let Some(s) = &self.slack {
            let ctx = "[notify.slack]";
            secret_source(
                ctx,
                "bot_token",
                s.bot_token.as_ref(),
                s.bot_token_file.as_ref(),
                true,
            )?;
            secret_source(
                ctx,
                "signing_secret",
                s.signing_secret.as_ref(),
                s.signing_secret_file.as_ref(),
                true,
            )?;
            if !is_http_url(&s.api_base) {
                return Err(bad(format!(
                    "{ctx}: api_base `{}` must be an http(s) URL",
                    s.api_base
                )));
            }
            // Interactions are always on (a signing secret is required), so
            // the workspace whose clicks count must be named.
            match &s.team_id {
                Some(t) if is_slack_id(t, 'T') => {}
                Some(t) => {
                    return Err(bad(format!(
                        "{ctx}: team_id `{t}` is not a Slack workspace id (T followed by letters and digits)"
                    )))
                }
                None => {
                    return Err(bad(format!(
                        "{ctx}: team_id is required: the workspace id (T…) whose members may approve; \
                         find it in Slack under About this workspace, or in any interaction payload's team.id"
                    )))
                }
            }
            if let Some(e) = s.enterprise_id.as_ref().filter(|e| !is_slack_id(e, 'E')) {
                return Err(bad(format!(
                    "{ctx}: enterprise_id `{e}` is not an Enterprise Grid id (E followed by letters and digits)"
                )));
            }
        }
        let mut seen = std::collections::BTreeSet::new();
        let mut names = std::collections::BTreeSet::new();
        for (i, w) in self.webhook.iter().enumerate() {
            let ctx = format!("[[notify.webhook]] `{}`", w.url);
            if let Some(n) = &w.name {
                let ok = !n.is_empty()
                    && n.len() <= 64
                    && n.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
                if !ok || matches!(n.as_str(), "slack" | "email") {
                    return Err(bad(format!(
                        "{ctx}: name must be 1-64 of letters, digits, - _ . (and not slack or email)"
                    )));
                }
            }
            if !names.insert(w.name_at(i)) {
                return Err(bad(format!(
                    "{ctx}: name is used twice (names label metrics)"
                )));
            }
            if !is_http_url(&w.url) {
                return Err(bad(format!("{ctx}: url must be an http(s) URL")));
            }
            if !seen.insert(w.url.clone()) {
                return Err(bad(format!("{ctx} is defined twice")));
            }
            secret_source(
                &ctx,
                "secret",
                w.secret.as_ref(),
                w.secret_file.as_ref(),
                true,
            )?;
            if w.events.is_empty() {
                return Err(bad(format!(
                    "{ctx}: events is empty (omit it to send all events)"
                )));
            }
            for e in &w.events {
                if !is_event_pattern(e) {
                    return Err(bad(format!(
                        "{ctx}: event pattern `{e}` must be `*`, `kind.*` or an event kind such as `request.created`"
                    )));
                }
            }
        }
        if let Some(e) = &self.email {
            let ctx = "[notify.email]";
            if e.host.is_empty() {
                return Err(bad(format!("{ctx}: host is empty")));
            }
            if e.password.is_some() && e.password_file.is_some() {
                return Err(bad(format!(
                    "{ctx}: set `password` or `password_file`, not both"
                )));
            }
            for a in std::iter::once(&e.from).chain(&e.to) {
                if !is_email(a) {
                    return Err(bad(format!("{ctx}: `{a}` is not an email address")));
                }
            }
        }
        Ok(())
    }
}

fn is_http_url(u: &str) -> bool {
    (u.starts_with("http://") || u.starts_with("https://"))
        && u.len() <= 2048
        && !u.chars().any(|c| c.is_whitespace() || c.is_control())
}

/// A plausible single email address (no display names, no spaces).
pub fn is_email(a: &str) -> bool {
    let Some((local, domain)) = a.split_once('@') else {
        return false;
    };
    !local.is_empty()
        && a.len() <= 254
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !a.chars().any(|c| {
            c.is_whitespace() || c.is_control() || matches!(c, '<' | '>' | ',' | ';' | '"')
        })
        && !domain.contains('@')
}

fn is_event_pattern(p: &str) -> bool {
    let body = p.strip_suffix(".*").unwrap_or(p);
    p == "*"
        || (!body.is_empty()
            && body.len() <= 64
            && body
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'.'))
}

/// Whether an audit event `kind` is selected by `patterns` (`*`, `request.*`, exact).
pub fn event_matches(patterns: &[String], kind: &str) -> bool {
    patterns.iter().any(|p| {
        p == "*"
            || p == kind
            || p.strip_suffix(".*").is_some_and(|prefix| {
                kind.strip_prefix(prefix)
                    .is_some_and(|rest| rest.starts_with('.'))
            })
    })
}

/// `X-Airlock-Signature` value: `t=<unix seconds>,v1=<hex HMAC-SHA256("<t>.<body>")>`.
pub fn webhook_signature(secret: &[u8], unix_seconds: i64, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(unix_seconds.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!(
        "t={unix_seconds},v1={}",
        hex::encode(mac.finalize().into_bytes())
    )
}

/// Slack's request signature: `v0=` hex HMAC-SHA256 of `v0:{timestamp}:{body}`.
pub fn slack_signature(signing_secret: &[u8], timestamp: &str, body: &[u8]) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(signing_secret).expect("HMAC takes any key length");
    mac.update(b"v0:");
    mac.update(timestamp.as_bytes());
    mac.update(b":");
    mac.update(body);
    format!("v0={}", hex::encode(mac.finalize().into_bytes()))
}

/// Constant-time comparison of two signatures.
pub fn signatures_equal(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_patterns_match_prefixes_at_dots_only() {
        let p = vec!["request.*".to_string(), "run.finished".to_string()];
        assert!(event_matches(&p, "request.created"));
        assert!(event_matches(&p, "run.finished"));
        assert!(!event_matches(&p, "run.created"));
        assert!(!event_matches(&p, "requests.created"));
        assert!(!event_matches(&p, "request"));
        assert!(event_matches(&["*".to_string()], "drift.detected"));
    }

    #[test]
    fn webhook_signature_is_hmac_of_timestamp_dot_body() {
        let want = format!(
            "t=1700000000,v1={}",
            expected_hex(b"secret", b"1700000000.{\"a\":1}")
        );
        assert_eq!(
            webhook_signature(b"secret", 1_700_000_000, br#"{"a":1}"#),
            want
        );
        assert_ne!(
            webhook_signature(b"secret", 1_700_000_001, br#"{"a":1}"#),
            want
        );
    }

    fn expected_hex(key: &[u8], msg: &[u8]) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(key).unwrap();
        mac.update(msg);
        hex::encode(mac.finalize().into_bytes())
    }

    #[test]
    fn slack_signature_matches_slacks_documented_example() {
        // From Slack's "Verifying requests from Slack" guide.
        let body = "token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c";
        assert_eq!(
            slack_signature(
                b"8f742231b10e8888abcd99yyyzzz85a5",
                "1531420618",
                body.as_bytes()
            ),
            "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503"
        );
    }

    #[test]
    fn email_addresses_are_checked_plainly() {
        assert!(is_email("payments-oncall@example.com"));
        for bad in ["x", "a@b", "a b@c.d", "<a@b.c>", "a@b.c,d@e.f", "@b.c"] {
            assert!(!is_email(bad), "{bad}");
        }
    }
}
