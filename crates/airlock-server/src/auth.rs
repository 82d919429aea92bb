//! Bearer-token authentication. Tokens are random (160 bits), shown once and
//! stored only as SHA-256 hashes; admin tokens given at start-up
//! (`AIRLOCK_BOOTSTRAP_TOKEN`, `serve --dev`) live only in memory.

use std::sync::Arc;

use airlock_core::{Principal, UserName};
use airlock_store::LockKind;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::app::App;
use crate::problem::ApiError;

/// Prefix that makes airlock tokens easy to spot in secret scanners.
pub const TOKEN_PREFIX: &str = "alk_";

/// Name of the principal behind start-up admin tokens.
pub const BOOTSTRAP_USER: &str = "admin";

/// A new random token secret.
pub fn new_token() -> String {
    let mut b = [0u8; 20];
    rand::rngs::OsRng.fill_bytes(&mut b);
    format!("{TOKEN_PREFIX}{}", hex::encode(b))
}

/// SHA-256 of a token secret, as stored.
pub fn hash_token(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// The authenticated principal of an API call.
pub struct Caller(pub Principal);

impl FromRequestParts<Arc<App>> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &Arc<App>) -> Result<Self, ApiError> {
        let header = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        let token = match header {
            Some(h) => h
                .strip_prefix("Bearer ")
                .map(str::trim)
                .filter(|t| !t.is_empty() && t.len() <= 256)
                .ok_or_else(|| {
                    ApiError::unauthorized("Authorization header must be `Bearer <token>`")
                })?,
            None => {
                let t = crate::session::cookie(&parts.headers, crate::session::COOKIE)
                    .ok_or_else(|| {
                        ApiError::unauthorized(
                            "missing bearer token: set AIRLOCK_TOKEN (see `airlock token create`) or run `airlock login`",
                        )
                    })?;
                // A cookie rides along on cross-site requests; writes must prove
                // they come from our own pages.
                if !parts.method.is_safe() {
                    let given = parts
                        .headers
                        .get(crate::session::CSRF_HEADER)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default();
                    if !crate::session::csrf_ok(app, t, given) {
                        return Err(ApiError::new(
                            axum::http::StatusCode::FORBIDDEN,
                            "missing or wrong X-CSRF-Token for a cookie-authenticated write: reload the page",
                        ));
                    }
                }
                t
            }
        };
        Self::from_token(app, token).await
    }
}

impl Caller {
    /// Resolves a token secret (bearer or session cookie) to its principal.
    /// Groups from the catalog and admin membership are evaluated from the
    /// configuration in force, and a locked user is refused.
    pub async fn from_token(app: &Arc<App>, token: &str) -> Result<Caller, ApiError> {
        let hash = hash_token(token);
        if app.admin_token_hashes.iter().any(|h| h == &hash) {
            // Start-up admin tokens are the way back in; locks do not apply to them.
            let name = UserName::parse(BOOTSTRAP_USER).expect("static name is valid");
            return Ok(Caller(app.config.principal(name, &[], true)));
        }
        let rec = app
            .svc
            .db_untracked(move |s| s.find_token(&hash))
            .await?
            .ok_or_else(|| {
                ApiError::unauthorized(
                    "unknown token: ask an admin for a new one (`airlock token create`)",
                )
            })?;
        if rec.revoked {
            return Err(ApiError::unauthorized(
                "token was revoked: ask an admin for a new one",
            ));
        }
        if rec.expires_at <= app.now() {
            return Err(ApiError::unauthorized(
                "token expired: ask an admin for a new one",
            ));
        }
        if let Some(lock) =
            airlock_service::locks::find(&app.svc, LockKind::User, rec.user.as_str()).await?
        {
            return Err(airlock_service::locks::refusal(&lock).into());
        }
        airlock_service::tokens::touch(&app.svc, rec.hash);
        let mut principal = app.config.principal(rec.user, &rec.groups, rec.admin);
        principal.mfa = rec.mfa;
        Ok(Caller(principal))
    }
}

/// The surface a plain API call came through, read from its `User-Agent`
/// (labels metrics and audit data only; it grants nothing).
pub struct Via(pub airlock_service::surface::Surface);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Via {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _: &S,
    ) -> Result<Self, Self::Rejection> {
        let ua = parts
            .headers
            .get(axum::http::header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        Ok(Via(airlock_service::surface::Surface::from_user_agent(ua)))
    }
}
