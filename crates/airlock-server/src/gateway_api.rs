//! The gateway's HTTP surface: the tunnel WebSocket (one per session,
//! subprotocol `airlock-tunnel-v1`, raw bytes in binary messages; the close
//! frame's reason is the session's end reason), what a client learns before
//! it tunnels, and the session list, query log and termination.

use std::sync::Arc;

use airlock_api::sessions::{QUERY_LOG_TYPE, TUNNEL_PROTOCOL};
use airlock_core::request::RequestId;
use airlock_core::session::SessionId;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde::Deserialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::api::json;
use crate::app::App;
use crate::auth::Caller;
use crate::problem::ApiError;
use airlock_service::gateway;

type AppState = State<Arc<App>>;

/// Tunnel bytes buffered between the WebSocket and the session, each way.
const PIPE: usize = 256 * 1024;
/// Largest WebSocket message accepted from a client.
const MAX_MESSAGE: usize = 1 << 20;

/// The gateway routes.
pub fn routes() -> Router<Arc<App>> {
    Router::new()
        .route("/api/v1/requests/{id}/gateway", get(info))
        .route("/api/v1/requests/{id}/connect", get(connect))
        .route("/api/v1/sessions", get(list))
        .route("/api/v1/sessions/{id}", get(show))
        .route("/api/v1/sessions/{id}/events", get(events))
        .route("/api/v1/sessions/{id}/terminate", post(terminate))
}

fn request_id(s: &str) -> Result<RequestId, ApiError> {
    Ok(RequestId::parse(s)?)
}

fn session_id(s: &str) -> Result<SessionId, ApiError> {
    Ok(SessionId::parse(s)?)
}

/// `GET /api/v1/requests/{id}/gateway`: whether and how the caller may tunnel.
async fn info(
    State(app): AppState,
    Caller(p): Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let plan = gateway::authorize(&app.svc, &p, request_id(&id)?).await?;
    Ok(json(StatusCode::OK, plan.info()))
}

/// `GET /api/v1/requests/{id}/connect`: one gateway session over a WebSocket.
/// Bearer tokens only: a browser's cookie would let another site open one.
async fn connect(
    State(app): AppState,
    headers: HeaderMap,
    Caller(p): Caller,
    Path(id): Path<String>,
    ws: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    if !headers.contains_key(header::AUTHORIZATION) {
        return Err(ApiError::unauthorized(
            "a gateway tunnel needs `Authorization: Bearer <token>` (run `airlock connect`)",
        ));
    }
    let ws = ws.map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("not a WebSocket upgrade ({e}); use `airlock connect {id}`"),
        )
    })?;
    let offered = headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(',').map(str::trim))
        .any(|v| v == TUNNEL_PROTOCOL);
    if !offered {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("the tunnel speaks subprotocol `{TUNNEL_PROTOCOL}` only"),
        ));
    }
    let plan = gateway::authorize(&app.svc, &p, request_id(&id)?).await?;
    let svc = app.svc.clone();
    Ok(ws
        .protocols([TUNNEL_PROTOCOL])
        .max_message_size(MAX_MESSAGE)
        .on_upgrade(move |socket| tunnel(svc, plan, socket)))
}

/// Pumps WebSocket messages to and from the session's byte stream.
async fn tunnel(svc: Arc<airlock_service::Service>, plan: gateway::Plan, socket: WebSocket) {
    use futures_util::{SinkExt, StreamExt};
    let (near, far) = tokio::io::duplex(PIPE);
    let session = tokio::spawn(gateway::run(svc, plan, far));
    let (mut near_r, mut near_w) = tokio::io::split(near);
    let (mut tx, mut rx) = socket.split();
    let up = tokio::spawn(async move {
        while let Some(Ok(m)) = rx.next().await {
            match m {
                // An empty message is the client's end of stream (a half-close).
                Message::Binary(b) if b.is_empty() => {
                    let _ = near_w.shutdown().await;
                }
                Message::Binary(b) => {
                    let written = near_w.write_all(&b).await;
                    if written.is_err() {
                        break;
                    }
                }
                Message::Close(_) => break,
                _ => {}
            }
        }
        let _ = near_w.shutdown().await;
    });
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match near_r.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if tx
                    .send(Message::Binary(buf[..n].to_vec().into()))
                    .await
                    .is_err()
                {
                    break;
                }
            }
        }
    }
    // The session dropped its end: it is over, and says why.
    let reason = session
        .await
        .unwrap_or(airlock_core::session::EndReason::Error);
    up.abort();
    let _ = tx
        .send(Message::Close(Some(CloseFrame {
            code: 1000,
            reason: reason.as_str().into(),
        })))
        .await;
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListParams {
    request: Option<String>,
    limit: Option<u32>,
}

/// `GET /api/v1/sessions`: the sessions the caller may read, newest first.
async fn list(
    State(app): AppState,
    Caller(p): Caller,
    Query(q): Query<ListParams>,
) -> Result<Response, ApiError> {
    let request = q.request.as_deref().map(request_id).transpose()?;
    let sessions = gateway::list(&app.svc, &p, request, q.limit.unwrap_or(100)).await?;
    let views: Vec<_> = sessions.iter().map(gateway::view).collect();
    Ok(json(StatusCode::OK, views))
}

/// `GET /api/v1/sessions/{id}`.
async fn show(
    State(app): AppState,
    Caller(p): Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let s = gateway::get(&app.svc, &p, session_id(&id)?).await?;
    Ok(json(StatusCode::OK, gateway::view(&s)))
}

/// `GET /api/v1/sessions/{id}/events`: the query log (JSON Lines).
async fn events(
    State(app): AppState,
    Caller(p): Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let (_, body) = gateway::recording(&app.svc, &p, session_id(&id)?).await?;
    Ok(([(header::CONTENT_TYPE, QUERY_LOG_TYPE)], body).into_response())
}

/// `POST /api/v1/sessions/{id}/terminate`: ends it at once (reviewers, admins).
async fn terminate(
    State(app): AppState,
    Caller(p): Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let s = gateway::terminate(&app.svc, &p, session_id(&id)?).await?;
    Ok(json(StatusCode::ACCEPTED, gateway::view(&s)))
}
