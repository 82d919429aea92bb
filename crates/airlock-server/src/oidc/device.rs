//! CLI login: the server runs the device authorization grant (RFC 8628) with
//! its own client credentials. `POST /api/v1/auth/device` starts it and
//! returns the code to show; the CLI polls `POST /api/v1/auth/device/token`
//! until the person approved at the provider, then gets an airlock session
//! token. `POST /api/v1/auth/logout` revokes the caller's own token.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{extract::State, Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

use super::idp::{clip, TokenOutcome};
use super::{configured, OidcError};
use crate::api::ApiJson;
use crate::app::App;
use crate::auth::Caller;
use crate::problem::ApiError;
use crate::session;

const DEVICE_GRANT: &str = "urn:ietf:params:oauth:grant-type:device_code";
/// Device logins started per minute (the endpoint is unauthenticated and calls the provider).
const STARTS_PER_MINUTE: u32 = 60;

/// A fixed-window limit on unauthenticated device-login starts.
#[derive(Default)]
pub(super) struct Limiter(Mutex<Option<(Instant, u32)>>);

impl Limiter {
    fn allow(&self) -> bool {
        let mut w = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        match w.as_mut() {
            Some((start, n)) if now.duration_since(*start) < Duration::from_secs(60) => {
                *n += 1;
                *n <= STARTS_PER_MINUTE
            }
            _ => {
                *w = Some((now, 1));
                true
            }
        }
    }
}

pub(super) fn routes() -> Router<Arc<App>> {
    Router::new()
        .route("/api/v1/auth/device", post(start))
        .route("/api/v1/auth/device/token", post(poll))
        .route("/api/v1/auth/logout", post(logout))
}

async fn start(State(app): State<Arc<App>>) -> Result<Response, ApiError> {
    let oidc = configured(&app)?;
    if !oidc.device_limit.allow() {
        return Err(ApiError {
            retry_after: Some(60),
            ..ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "too many logins started in the last minute; retry shortly",
            )
        });
    }
    let d = oidc.idp.discovery().await?;
    let url = d.device_authorization_endpoint.as_deref().ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_IMPLEMENTED,
            "the identity provider does not offer the device authorization grant: enable it for airlock's client (docs/oidc.md)",
        )
    })?;
    let scope = oidc.config.scopes.join(" ");
    let v = oidc.idp.post_form(url, &[("scope", &scope)]).await?;
    if let Some(e) = v.get("error").and_then(Value::as_str) {
        let desc = v
            .get("error_description")
            .and_then(Value::as_str)
            .unwrap_or_default();
        return Err(ApiError::new(
            StatusCode::BAD_GATEWAY,
            format!(
                "the identity provider refused to start a device login: {} {}",
                clip(e),
                clip(desc)
            ),
        ));
    }
    let s = |k: &str| v.get(k).and_then(Value::as_str).map(clip);
    let (Some(device_code), Some(user_code), Some(uri)) =
        (s("device_code"), s("user_code"), s("verification_uri"))
    else {
        return Err(OidcError::Unavailable(
            "the device authorization response lacks device_code, user_code or verification_uri"
                .into(),
        )
        .into());
    };
    Ok(Json(json!({
        "device_code": device_code,
        "user_code": user_code,
        "verification_uri": uri,
        "verification_uri_complete": s("verification_uri_complete"),
        "expires_in": v.get("expires_in").and_then(Value::as_u64).unwrap_or(600),
        "interval": v.get("interval").and_then(Value::as_u64).unwrap_or(5),
    }))
    .into_response())
}

/// Body of `POST /api/v1/auth/device/token`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PollBody {
    pub(crate) device_code: String,
}

async fn poll(
    State(app): State<Arc<App>>,
    ApiJson(body): ApiJson<PollBody>,
) -> Result<Response, ApiError> {
    let oidc = configured(&app)?;
    if body.device_code.is_empty() || body.device_code.len() > 512 {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "device_code must be 1-512 characters",
        ));
    }
    let pending = |status: &str, interval: u64| {
        (
            StatusCode::ACCEPTED,
            Json(json!({"status": status, "interval": interval})),
        )
            .into_response()
    };
    let tokens = match oidc
        .idp
        .token(&[
            ("grant_type", DEVICE_GRANT),
            ("device_code", &body.device_code),
        ])
        .await?
    {
        TokenOutcome::Tokens(t) => t,
        TokenOutcome::Refused(e, d) => {
            return match e.as_str() {
                "authorization_pending" => Ok(pending("pending", 5)),
                "slow_down" => Ok(pending("slow_down", 10)),
                "access_denied" => Err(ApiError::new(
                    StatusCode::FORBIDDEN,
                    "the login was denied at the identity provider",
                )),
                "expired_token" => Err(ApiError::new(
                    StatusCode::GONE,
                    "the login code expired: run `airlock login` again",
                )),
                _ => Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    format!("the identity provider refused the login: {e} {d}"),
                )),
            };
        }
    };
    let id_token = tokens.id_token.ok_or_else(|| {
        ApiError::from(OidcError::Refused(
            "the token endpoint returned no id_token (is `openid` in scopes?)".into(),
        ))
    })?;
    let now = app.now();
    // The device grant sends no nonce; the token is fresh from the token endpoint over TLS.
    let claims = oidc
        .idp
        .verify(&id_token, None, now.unix_timestamp())
        .await?;
    let (who, groups) = crate::identity::oidc_login(&app, &oidc.config, &claims).await?;
    let origin = session::Origin {
        groups,
        admin: false,
        mfa: who.mfa,
        parent: None,
    };
    let token =
        session::start(&app, &who.name, origin, "oidc-device", session::SESSION_TTL).await?;
    Ok(Json(json!({
        "status": "ok",
        "token": token,
        "expires_at": crate::lifecycle::fmt_time(now + session::SESSION_TTL),
        "user": who.name,
        "groups": who.groups,
        "mfa": who.mfa,
    }))
    .into_response())
}

async fn logout(State(app): State<Arc<App>>, headers: HeaderMap) -> Result<Response, ApiError> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|h| h.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty() && t.len() <= 256)
        .ok_or_else(|| {
            ApiError::unauthorized("send the token to revoke as `Authorization: Bearer <token>`")
        })?;
    let Caller(who) = Caller::from_token(&app, token).await?;
    if app
        .admin_token_hashes
        .contains(&crate::auth::hash_token(token))
    {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "start-up admin tokens cannot be revoked: restart the server without it",
        ));
    }
    session::end(&app, &who, token).await?;
    Ok(Json(json!({"revoked": true, "user": who.name})).into_response())
}
