//! CLI login: the server runs the device authorization grant (RFC 8628) with
//! its own client credentials. `POST /api/v1/auth/device` starts it and
//! returns the code to show; the CLI polls `POST /api/v1/auth/device/token`
//! until the person approved at the provider, then gets an airlock session
//! token. `POST /api/v1/auth/logout` revokes the caller's own token. Starts
//! are limited per client address and polls paced per device code
//! (`device_pace`); `[auth.oidc] device_flow = false` turns both off (404).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use airlock_core::oidc::MAX_DEVICE_POLL_INTERVAL_SECS;
use axum::extract::ConnectInfo;
use axum::http::{header, Extensions, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{extract::State, Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

use super::device_pace::{PollCheck, STARTS_PER_ADDRESS, STARTS_PER_MINUTE};
use super::idp::{clip, TokenOutcome};
use super::{configured, OidcError};
use crate::api::ApiJson;
use crate::app::App;
use crate::auth::Caller;
use crate::problem::ApiError;
use crate::session;

const DEVICE_GRANT: &str = "urn:ietf:params:oauth:grant-type:device_code";

/// 404 when `[auth.oidc] device_flow = false`.
fn enabled(app: &App) -> Result<&Arc<super::Oidc>, ApiError> {
    let oidc = configured(app)?;
    if !oidc.config.device_flow {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "device login (`airlock login`) is disabled on this server ([auth.oidc] device_flow = false): log in with the web UI at /ui/login and use a token from it",
        ));
    }
    Ok(oidc)
}

/// The TCP peer's address (absent when the router is driven without a listener).
fn peer(ext: &Extensions) -> IpAddr {
    ext.get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip())
        .unwrap_or(IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED))
}

pub(super) fn routes() -> Router<Arc<App>> {
    Router::new()
        .route("/api/v1/auth/device", post(start))
        .route("/api/v1/auth/device/token", post(poll))
        .route("/api/v1/auth/logout", post(logout))
}

async fn start(State(app): State<Arc<App>>, ext: Extensions) -> Result<Response, ApiError> {
    let oidc = enabled(&app)?;
    if !oidc.device_starts.allow(peer(&ext), Instant::now()) {
        return Err(ApiError {
            retry_after: Some(60),
            ..ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                format!("too many device logins started in the last minute (at most {STARTS_PER_ADDRESS} per client address, {STARTS_PER_MINUTE} per server): retry in a minute"),
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
    let expires_in = v.get("expires_in").and_then(Value::as_u64).unwrap_or(600);
    // The provider's interval when longer than ours; RFC 8628's 5 s when it names none.
    let interval = v
        .get("interval")
        .and_then(Value::as_u64)
        .unwrap_or(0)
        .max(oidc.config.device_poll_interval.as_secs())
        .min(MAX_DEVICE_POLL_INTERVAL_SECS);
    oidc.device_polls.started(
        &device_code,
        interval,
        Duration::from_secs(expires_in),
        Instant::now(),
    );
    Ok(Json(json!({
        "device_code": device_code,
        "user_code": user_code,
        "verification_uri": uri,
        "verification_uri_complete": s("verification_uri_complete"),
        "expires_in": expires_in,
        "interval": interval,
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
    let oidc = enabled(&app)?;
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
    let code = body.device_code.as_str();
    // RFC 8628 §3.5: too soon answers slow_down, and the provider is not asked.
    let told = match oidc.device_polls.check(code, Instant::now()) {
        PollCheck::SlowDown(interval) => return Ok(pending("slow_down", interval)),
        PollCheck::Proceed(interval) => interval,
        PollCheck::Unknown => oidc.config.device_poll_interval.as_secs(),
    };
    let outcome = oidc
        .idp
        .token(&[("grant_type", DEVICE_GRANT), ("device_code", code)])
        .await?;
    let answered = |slow: bool| {
        oidc.device_polls
            .answered(code, slow, Instant::now())
            .unwrap_or(if slow { told + 5 } else { told })
    };
    let tokens = match outcome {
        TokenOutcome::Tokens(t) => {
            oidc.device_polls.finished(code);
            t
        }
        TokenOutcome::Refused(e, d) => {
            if !matches!(e.as_str(), "authorization_pending" | "slow_down") {
                oidc.device_polls.finished(code);
            }
            return match e.as_str() {
                "authorization_pending" => Ok(pending("pending", answered(false))),
                "slow_down" => Ok(pending("slow_down", answered(true))),
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
        "expires_at": airlock_service::lifecycle::fmt_time(now + session::SESSION_TTL),
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
