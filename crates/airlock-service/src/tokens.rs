//! Token administration: admins list tokens (never their secrets) and revoke
//! them by prefix or by user; revoking a token ends the web sessions started
//! from it. Last use is recorded at most once a minute per token.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use airlock_api::access::TokenView;
use airlock_core::audit_chain::AuditDraft;
use airlock_core::{Error, Principal, UserName};
use airlock_store::{TokenFilter, TokenRecord};
use serde_json::json;
use time::OffsetDateTime;

use crate::lifecycle::fmt_time;
use crate::Service;
use crate::ServiceError;

/// Shortest prefix `token revoke` accepts (the 8 hex digits shown by `token list`).
pub const MIN_PREFIX_LEN: usize = 8;
/// How often one token's last use is written.
const TOUCH_EVERY: Duration = Duration::from_secs(60);
/// Bound on the in-memory record of recent touches.
const MAX_TOUCHED: usize = 100_000;

/// A token as admins see it (the wire type is shared with the CLI).
pub fn view(t: &TokenRecord) -> TokenView {
    TokenView {
        prefix: t.prefix(),
        user: t.user.to_string(),
        admin: t.admin,
        groups: t.groups.iter().map(|g| g.to_string()).collect(),
        created_by: t.created_by.clone(),
        created_at: fmt_time(t.created_at),
        expires_at: fmt_time(t.expires_at),
        last_used_at: t.last_used_at.map(fmt_time),
        session: t.created_by.starts_with("login:"),
    }
}

/// When each token was last written as used, so a busy token costs one write a minute.
#[derive(Default)]
pub struct TouchLog(Mutex<HashMap<[u8; 32], Instant>>);

/// Records a token's use in the background, at most once a minute.
pub fn touch(app: &Arc<Service>, hash: [u8; 32]) {
    {
        let mut seen = app.touched.0.lock().unwrap_or_else(|p| p.into_inner());
        if seen.get(&hash).is_some_and(|t| t.elapsed() < TOUCH_EVERY) {
            return;
        }
        if seen.len() >= MAX_TOUCHED {
            seen.retain(|_, t| t.elapsed() < TOUCH_EVERY);
        }
        seen.insert(hash, Instant::now());
    }
    let app = app.clone();
    tokio::spawn(async move {
        let now = app.now();
        if let Err(e) = app.db_untracked(move |s| s.touch_token(&hash, now)).await {
            tracing::debug!(error = %e, "could not record a token's last use");
        }
    });
}

fn admin_only(who: &Principal, what: &str) -> Result<(), Error> {
    if who.admin {
        Ok(())
    } else {
        Err(Error::forbidden(format!("only admins can {what}")))
    }
}

/// `airlock token list [--user U]`: one page of at most `limit` tokens after
/// `after`, and the cursor of the next page if there may be one.
pub async fn list(
    app: &Arc<Service>,
    who: &Principal,
    user: Option<&str>,
    after: Option<(OffsetDateTime, [u8; 32])>,
    limit: u32,
) -> Result<(Vec<TokenView>, Option<String>), ServiceError> {
    admin_only(who, "list tokens")?;
    let filter = TokenFilter {
        user: user.map(UserName::parse).transpose()?,
        after,
        limit,
    };
    let now = app.now();
    let tokens = app
        .db_untracked(move |s| s.list_tokens(&filter, now))
        .await?;
    let hex_last = tokens.last().map(|t| (t.created_at, hex::encode(t.hash)));
    let next = crate::page::next_cursor(
        tokens.len(),
        limit,
        hex_last.as_ref().map(|(at, h)| (*at, h.as_str())),
    );
    Ok((tokens.iter().map(view).collect(), next))
}

/// The `(created_at, hash)` a token-list cursor names.
pub fn parse_cursor(s: &str) -> Result<(OffsetDateTime, [u8; 32]), ServiceError> {
    let (at, id) = crate::page::parse_cursor(s)?;
    let hash = hex::decode(id)
        .ok()
        .and_then(|h| <[u8; 32]>::try_from(h).ok())
        .ok_or_else(crate::page::bad_cursor)?;
    Ok((at, hash))
}

/// What `token revoke` names: one token by prefix, or every token of a user.
pub enum Selector {
    Prefix(String),
    User(String),
}

/// `airlock token revoke PREFIX` / `--user U`: returns the revoked tokens.
pub async fn revoke(
    app: &Arc<Service>,
    who: &Principal,
    selector: Selector,
) -> Result<Vec<TokenView>, ServiceError> {
    admin_only(who, "revoke tokens")?;
    let now = app.now();
    let (user, prefix) = match selector {
        Selector::User(u) => (Some(UserName::parse(&u)?), None),
        Selector::Prefix(p) => {
            let p = p.to_ascii_lowercase();
            if p.len() < MIN_PREFIX_LEN || p.len() > 64 || !p.bytes().all(|b| b.is_ascii_hexdigit())
            {
                return Err(Error::invalid(
                    "prefix",
                    format!("give at least {MIN_PREFIX_LEN} hex digits of the token's hash, as `airlock token list` shows them"),
                )
                .into());
            }
            (None, Some(p))
        }
    };
    let filter = TokenFilter {
        user: user.clone(),
        after: None,
        limit: 10_000,
    };
    let mut tokens = app
        .db_untracked(move |s| s.list_tokens(&filter, now))
        .await?;
    if let Some(p) = &prefix {
        tokens.retain(|t| hex::encode(t.hash).starts_with(p.as_str()));
        match tokens.len() {
            0 => {
                return Err(Error::not_found(format!(
                    "live token with prefix `{p}` (see `airlock token list`)"
                ))
                .into())
            }
            1 => {}
            n => {
                return Err(Error::invalid(
                    "prefix",
                    format!("`{p}` matches {n} tokens: give more hex digits"),
                )
                .into())
            }
        }
    }
    let mut revoked = Vec::new();
    for t in tokens {
        let audit = AuditDraft::new(
            "token.revoked",
            who.name.as_str(),
            format!("user:{}", t.user),
            json!({"token_sha256_prefix": t.prefix(), "by_admin": true}),
        );
        let hash = t.hash;
        if app.db(move |s| s.revoke_token(&hash, &audit, now)).await? {
            revoked.push(view(&t));
        }
    }
    if revoked.is_empty() {
        if let Some(u) = user {
            return Err(Error::not_found(format!("live token of `{u}`")).into());
        }
    }
    Ok(revoked)
}
