//! HTTP handlers for cutting people off: token list/revoke, locks and
//! identity rebinding. They parse, call `tokens`/`locks`/`identity`, render.

use std::sync::Arc;

use airlock_api::access::{
    LockPlaced, LockView, NewLock, Rebound, RevokeTokens, RevokedTokens, Unlocked,
};
use airlock_store::{Lock, LockKind};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use crate::api::ApiJson;
use crate::app::App;
use crate::auth::Caller;
use crate::problem::ApiError;
use airlock_service::lifecycle::fmt_time;

type AppState = State<Arc<App>>;

fn bad_query(e: axum::extract::rejection::QueryRejection) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, e.body_text())
}

/// `?user=&limit=&cursor=` of `GET /api/v1/tokens`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TokenQuery {
    user: Option<String>,
    limit: Option<u32>,
    /// From the previous page's `Link: <…>; rel="next"` header.
    cursor: Option<String>,
}

/// `GET /api/v1/tokens`: admins list live tokens (never their secrets).
pub(crate) async fn list_tokens(
    State(app): AppState,
    Caller(p): Caller,
    q: Result<Query<TokenQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) = q.map_err(bad_query)?;
    let after = q
        .cursor
        .as_deref()
        .map(airlock_service::tokens::parse_cursor)
        .transpose()?;
    let limit = q
        .limit
        .unwrap_or(airlock_api::page::DEFAULT_LIMIT)
        .clamp(1, airlock_api::page::MAX_LIMIT);
    let (list, next) =
        airlock_service::tokens::list(&app.svc, &p, q.user.as_deref(), after, limit).await?;
    let mut resp = axum::Json(list).into_response();
    if let Some(c) = next {
        let mut query = vec![format!("cursor={c}"), format!("limit={limit}")];
        if let Some(u) = &q.user {
            // A user name is `[a-z0-9._@-]` once parsed (list refused it otherwise).
            query.push(format!("user={u}"));
        }
        let link = airlock_api::page::next_link_header("/api/v1/tokens", &query);
        if let Ok(v) = axum::http::HeaderValue::from_str(&link) {
            resp.headers_mut().insert(axum::http::header::LINK, v);
        }
    }
    Ok(resp)
}

/// `POST /api/v1/tokens/revoke`.
pub(crate) async fn revoke_tokens(
    State(app): AppState,
    Caller(p): Caller,
    ApiJson(b): ApiJson<RevokeTokens>,
) -> Result<Response, ApiError> {
    let selector = match (b.prefix, b.user) {
        (Some(prefix), None) => airlock_service::tokens::Selector::Prefix(prefix),
        (None, Some(user)) => airlock_service::tokens::Selector::User(user),
        _ => {
            return Err(airlock_core::Error::invalid(
                "prefix",
                "give exactly one of `prefix` (from `airlock token list`) and `user`",
            )
            .into())
        }
    };
    let revoked = airlock_service::tokens::revoke(&app.svc, &p, selector).await?;
    Ok(axum::Json(RevokedTokens { revoked }).into_response())
}

fn lock_view(l: &Lock) -> LockView {
    LockView {
        kind: l.kind.as_str().to_string(),
        name: l.name.clone(),
        reason: l.reason.clone(),
        created_by: l.created_by.clone(),
        created_at: fmt_time(l.created_at),
        expires_at: l.expires_at.map(fmt_time),
    }
}

/// `GET /api/v1/locks` (admins).
pub(crate) async fn list_locks(
    State(app): AppState,
    Caller(p): Caller,
) -> Result<Response, ApiError> {
    if !p.admin {
        return Err(airlock_core::Error::forbidden("only admins can list locks").into());
    }
    let now = app.now();
    let locks = app.svc.db_untracked(move |s| s.locks(now)).await?;
    Ok(axum::Json(locks.iter().map(lock_view).collect::<Vec<_>>()).into_response())
}

/// `POST /api/v1/locks`: places a lock and ends what it covers.
pub(crate) async fn create_lock(
    State(app): AppState,
    Caller(p): Caller,
    ApiJson(b): ApiJson<NewLock>,
) -> Result<Response, ApiError> {
    let kind = LockKind::parse(&b.kind)?;
    let (lock, done) = airlock_service::locks::lock(
        &app.svc,
        &p,
        kind,
        &b.name,
        &b.reason,
        b.duration.as_deref(),
    )
    .await?;
    let placed = LockPlaced {
        lock: lock_view(&lock),
        enforced: done,
    };
    Ok((StatusCode::CREATED, axum::Json(placed)).into_response())
}

/// `DELETE /api/v1/locks/{kind}/{name}`.
pub(crate) async fn remove_lock(
    State(app): AppState,
    Caller(p): Caller,
    Path((kind, name)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let kind = LockKind::parse(&kind)?;
    airlock_service::locks::unlock(&app.svc, &p, kind, &name).await?;
    Ok(axum::Json(Unlocked {
        unlocked: true,
        kind: kind.as_str().to_string(),
        name,
    })
    .into_response())
}

/// `POST /api/v1/users/{name}/rebind`: releases a name bound to an OIDC identity.
pub(crate) async fn rebind_user(
    State(app): AppState,
    Caller(p): Caller,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let released = crate::identity::rebind(&app, &p, &name).await?;
    if !released {
        return Err(airlock_core::Error::not_found(format!(
            "identity bound to `{name}` (nobody has logged in under it through OIDC)"
        ))
        .into());
    }
    Ok(axum::Json(Rebound {
        rebound: true,
        user: name.to_ascii_lowercase(),
    })
    .into_response())
}
