//! Browser sessions. A session is an ordinary airlock token (hashed at rest,
//! short-lived, revocable) carried in the `airlock_session` cookie instead of
//! an `Authorization` header, so web users and API callers share one model.
//! Cookie-authenticated writes need a CSRF token bound to the session:
//! `X-CSRF-Token` header (JS) or a `csrf` form field (HTML forms).

use std::sync::Arc;

use airlock_core::audit_chain::AuditDraft;
use airlock_core::{GroupName, Principal, UserName};
use airlock_store::TokenRecord;
use axum::http::HeaderMap;
use serde_json::json;

use crate::app::App;
use crate::auth::{hash_token, new_token};
use crate::problem::ApiError;

/// Name of the session cookie.
pub const COOKIE: &str = "airlock_session";
/// Header carrying the CSRF token on cookie-authenticated API writes.
pub const CSRF_HEADER: &str = "x-csrf-token";
/// Form field carrying the CSRF token on HTML form posts.
pub const CSRF_FIELD: &str = "csrf";
/// How long a browser session lasts.
pub const SESSION_TTL: time::Duration = time::Duration::hours(8);

/// Value of cookie `name` in the request, if present.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
        .filter(|v| !v.is_empty() && v.len() <= 256)
}

/// Whether cookies get the `Secure` attribute: always, except when the
/// server's public URL is plain http on loopback (development).
pub fn secure_cookies(app: &App) -> bool {
    match app.config.server.public_url.as_deref() {
        None => false,
        Some(u) => {
            !(u.starts_with("http://127.0.0.1")
                || u.starts_with("http://localhost")
                || u.starts_with("http://[::1]"))
        }
    }
}

/// `Set-Cookie` value for cookie `name` (HttpOnly, SameSite=Lax so the OIDC
/// redirect back to us carries it; Secure outside development).
pub fn set_cookie(app: &App, name: &str, value: &str, max_age_secs: i64) -> String {
    let secure = if secure_cookies(app) { "; Secure" } else { "" };
    format!("{name}={value}; Path=/; HttpOnly; SameSite=Lax; Max-Age={max_age_secs}{secure}")
}

/// `Set-Cookie` value that deletes cookie `name`.
pub fn clear_cookie(app: &App, name: &str) -> String {
    set_cookie(app, name, "", 0)
}

/// The CSRF token of a session: a MAC of the session token's hash.
pub fn csrf_token(app: &App, session_token: &str) -> String {
    hex::encode(app.keys.mac("csrf", &hash_token(session_token)))
}

/// Checks a CSRF token against the session (constant time).
pub fn csrf_ok(app: &App, session_token: &str, given: &str) -> bool {
    airlock_core::notify::signatures_equal(&csrf_token(app, session_token), given)
}

/// What a session carries besides its user: only what the login itself
/// vouched for (catalog groups and admin groups are re-read on every call).
pub struct Origin {
    /// Groups from the identity provider, or of the token signed in with.
    pub groups: Vec<GroupName>,
    /// Set only when the token signed in with was an admin token.
    pub admin: bool,
    pub mfa: bool,
    /// The token signed in with: revoking it ends this session.
    pub parent: Option<[u8; 32]>,
}

/// Starts a session for `who` (logged in `via` "oidc" or "token"): stores a
/// new token carrying `origin`, with an audit event, and returns its secret for the cookie.
pub async fn start(
    app: &Arc<App>,
    who: &UserName,
    origin: Origin,
    via: &str,
    ttl: time::Duration,
) -> Result<String, ApiError> {
    let token = new_token();
    let now = app.now();
    let rec = TokenRecord {
        hash: hash_token(&token),
        user: who.clone(),
        groups: origin.groups,
        admin: origin.admin,
        created_by: format!("login:{via}"),
        created_at: now,
        expires_at: now + ttl,
        revoked: false,
        mfa: origin.mfa,
        parent: origin.parent,
        last_used_at: None,
    };
    let audit = AuditDraft::new(
        "session.created",
        who.as_str(),
        format!("user:{who}"),
        json!({"via": via, "mfa": origin.mfa, "expires_at": airlock_service::lifecycle::fmt_time(rec.expires_at),
               "token_sha256_prefix": rec.prefix(),
               "parent_sha256_prefix": origin.parent.map(|p| hex::encode(&p[..4]))}),
    );
    app.svc
        .db(move |s| s.insert_token(&rec, &audit, now))
        .await?;
    Ok(token)
}

/// Ends a session (logout): the token is revoked, with an audit event.
pub async fn end(app: &Arc<App>, who: &Principal, session_token: &str) -> Result<(), ApiError> {
    let hash = hash_token(session_token);
    let audit = AuditDraft::new(
        "session.ended",
        who.name.as_str(),
        format!("user:{}", who.name),
        json!({"token_sha256_prefix": hex::encode(&hash[..4])}),
    );
    let now = app.now();
    app.svc
        .db(move |s| s.revoke_token(&hash, &audit, now))
        .await?;
    Ok(())
}
