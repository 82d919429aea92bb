//! The gateway's HTTP surface: the tunnel WebSocket (one per session,
//! subprotocol `airlock-tunnel-v1`, raw bytes in binary messages; the close
//! frame's reason is the session's end reason), what a client learns before
//! it tunnels, and the session list, query log and termination.

use std::sync::Arc;

use airlock_api::sessions::{QUERY_LOG_TYPE, RECORDING_TYPE, TUNNEL_PROTOCOL};
use airlock_core::request::RequestId;
use airlock_core::session::SessionId;
use airlock_core::session::SessionKind;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde::Deserialize;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::body::Bytes;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::api::json;
use crate::app::App;
use crate::auth::Caller;
use crate::problem::ApiError;
use airlock_service::gateway;

type AppState = State<Arc<App>>;

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
        .route("/api/v1/sessions/{id}/recording", get(recording))
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

/// Runs the session on the WebSocket itself, then closes it with the reason.
async fn tunnel(svc: Arc<airlock_service::Service>, plan: gateway::Plan, socket: WebSocket) {
    let mut stream = WsStream {
        ws: socket,
        pending: Bytes::new(),
        eof: false,
    };
    let reason = gateway::run(svc, plan, &mut stream).await;
    let _ = stream
        .ws
        .send(Message::Close(Some(CloseFrame {
            code: 1000,
            reason: reason.as_str().into(),
        })))
        .await;
}

/// The tunnel's bytes as a stream: binary messages in order; an empty one
/// (or a close) is the client's end of stream. Writes become one binary
/// message each, sent when flushed. Shutting down writes nothing: the close
/// frame, with the session's end reason, is sent by [`tunnel`].
struct WsStream {
    ws: WebSocket,
    /// The rest of the last message read.
    pending: Bytes,
    eof: bool,
}

fn io_error(e: axum::Error) -> std::io::Error {
    std::io::Error::other(e)
}

impl AsyncRead for WsStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        use futures_util::Stream;
        loop {
            if !self.pending.is_empty() {
                let n = self.pending.len().min(buf.remaining());
                buf.put_slice(&self.pending.split_to(n));
                return Poll::Ready(Ok(()));
            }
            if self.eof {
                return Poll::Ready(Ok(()));
            }
            match std::task::ready!(Pin::new(&mut self.ws).poll_next(cx)) {
                Some(Ok(Message::Binary(b))) if b.is_empty() => self.eof = true,
                Some(Ok(Message::Binary(b))) => self.pending = b,
                Some(Ok(Message::Close(_))) | None => self.eof = true,
                Some(Ok(_)) => {}
                Some(Err(e)) => return Poll::Ready(Err(io_error(e))),
            }
        }
    }
}

impl AsyncWrite for WsStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        use futures_util::Sink;
        std::task::ready!(Pin::new(&mut self.ws).poll_ready(cx)).map_err(io_error)?;
        Pin::new(&mut self.ws)
            .start_send(Message::Binary(Bytes::copy_from_slice(buf)))
            .map_err(io_error)?;
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        use futures_util::Sink;
        Pin::new(&mut self.ws).poll_flush(cx).map_err(io_error)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.poll_flush(cx)
    }
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

/// `GET /api/v1/sessions/{id}/events`: the query log (JSON Lines), or for
/// SSH the terminal recording.
async fn events(
    State(app): AppState,
    Caller(p): Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let (s, body) = gateway::recording(&app.svc, &p, session_id(&id)?).await?;
    Ok(([(header::CONTENT_TYPE, media_type(s.kind))], body).into_response())
}

/// `GET /api/v1/sessions/{id}/recording`: SSH as asciicast v2, PostgreSQL
/// as the query log; TCP sessions record nothing but byte counts.
async fn recording(
    State(app): AppState,
    Caller(p): Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let (s, body) = gateway::recording(&app.svc, &p, session_id(&id)?).await?;
    if s.kind == SessionKind::Tcp {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("session {} is a TCP relay: it records byte counts only (see `airlock session list`)", s.id),
        ));
    }
    Ok(([(header::CONTENT_TYPE, media_type(s.kind))], body).into_response())
}

fn media_type(kind: SessionKind) -> &'static str {
    match kind {
        SessionKind::Ssh => RECORDING_TYPE,
        SessionKind::Postgres | SessionKind::Tcp => QUERY_LOG_TYPE,
    }
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
