//! The proxy's HTTP API under `/api/v1`: tools, operations, runs, reviews,
//! transcripts and live output streams (see `frames` for the wire format).
//! Rate-limit refusals are 429 problems with `Retry-After` and the limit.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use airlock_core::request::ReviewDecision;
use airlock_core::run::{Run, RunId};
use airlock_core::Error;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::mpsc;

use crate::api::{
    json as json_response, optional_body, with_next, ApiJson, CommentBody, ListQuery, ReviewBody,
};
use crate::app::App;
use crate::auth::Caller;
use crate::auth::Via;
use crate::problem::ApiError;
use airlock_service::lifecycle::fmt_time;
use airlock_service::proxy::create::{self, Created, ExecInput, ProxyError, RateLimited};
use airlock_service::proxy::frames::{self, frame, json_frame, Kind};
use airlock_service::proxy::hub::Chunk;
use airlock_service::proxy::operation::{self, OperationInput};
use airlock_service::proxy::{execution, review};
use airlock_service::views::{run_view, run_views};

type AppState = State<Arc<App>>;

/// How often a follower polls the store for a run executing elsewhere.
const FOLLOW_POLL: Duration = Duration::from_millis(500);

/// The proxy's routes (merged into the main router).
pub fn routes() -> Router<Arc<App>> {
    Router::new()
        .route("/api/v1/tools", get(list_tools))
        .route("/api/v1/operations", get(list_operations))
        .route("/api/v1/operations/{name}/runs", post(operation_run))
        .route("/api/v1/runs", post(create_run).get(list_runs))
        .route("/api/v1/runs/{id}", get(show_run))
        .route("/api/v1/runs/{id}/reviews", post(review_run))
        .route("/api/v1/runs/{id}/start", post(start_run))
        .route("/api/v1/runs/{id}/cancel", post(cancel_run))
        .route("/api/v1/runs/{id}/transcript", get(transcript))
        .route("/api/v1/runs/{id}/stream", get(follow))
}

/// What a run route answers on failure: a problem, or a 429 naming the rate rule.
pub enum RunError {
    Problem(ApiError),
    RateLimited(Box<RateLimited>),
}

impl From<ProxyError> for RunError {
    fn from(e: ProxyError) -> Self {
        match e {
            ProxyError::Api(e) => RunError::Problem(e.into()),
            ProxyError::RateLimited(r) => RunError::RateLimited(r),
        }
    }
}

impl From<ApiError> for RunError {
    fn from(e: ApiError) -> Self {
        RunError::Problem(e)
    }
}

impl From<airlock_service::ServiceError> for RunError {
    fn from(e: airlock_service::ServiceError) -> Self {
        RunError::Problem(e.into())
    }
}

impl IntoResponse for RunError {
    fn into_response(self) -> Response {
        match self {
            RunError::Problem(e) => e.into_response(),
            RunError::RateLimited(r) => rate_limited(&r),
        }
    }
}

/// 429 with `Retry-After` and a problem body naming the rule, N per W and the next allowed time.
fn rate_limited(r: &RateLimited) -> Response {
    let body = json!({
        "type": "about:blank",
        "title": "Too Many Requests",
        "status": 429,
        "detail": r.message(),
        "rule": r.rule,
        "limit": r.rate.count,
        "window": r.rate.window.as_secs(),
        "next_allowed_at": fmt_time(r.next_allowed_at),
        "retry_after": r.retry_after,
        "run": r.run.as_ref().map(|run| &run.id),
    });
    let mut resp = (StatusCode::TOO_MANY_REQUESTS, body.to_string()).into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/problem+json"),
    );
    if let Ok(v) = HeaderValue::from_str(&r.retry_after.to_string()) {
        h.insert(header::RETRY_AFTER, v);
    }
    resp
}

/// A chunked response of frames.
fn stream_response(rx: mpsc::Receiver<Bytes>) -> Response {
    let body = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|b| (Ok::<Bytes, Infallible>(b), rx))
    });
    let mut resp = Response::new(Body::from_stream(body));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(frames::CONTENT_TYPE),
    );
    resp
}

fn created_response(c: Created) -> Response {
    match c {
        Created::Attached { frames, .. } => stream_response(frames),
        Created::Stored(run) => json_response(StatusCode::CREATED, run_view(&run)),
        Created::DryRunOnly(v) => json_response(StatusCode::OK, v),
    }
}

fn parse_run_id(s: &str) -> Result<RunId, ApiError> {
    Ok(RunId::parse(s)?)
}

async fn load(app: &Arc<App>, id: &RunId) -> Result<Run, ApiError> {
    let lookup = id.clone();
    Ok(app
        .svc
        .db(move |s| s.get_run(&lookup))
        .await?
        .ok_or_else(|| Error::not_found(format!("run `{id}`")))?)
}

async fn list_tools(State(app): AppState, Caller(_): Caller) -> Response {
    let list: Vec<Value> = app
        .config
        .tools
        .values()
        .map(|t| {
            json!({
                "name": t.name, "path": t.path, "timeout": t.timeout.as_secs(),
                "transcript_cap": t.transcript_cap,
                "rules": t.rules.iter().map(|r| json!({
                    "number": r.number, "args": r.args_text, "action": r.action,
                    "approvals": {"count": r.approvals.count, "reviewers": r.approvals.reviewers},
                    "rate": r.rate.map(|x| x.to_string()), "reason": r.reason,
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    json_response(StatusCode::OK, list)
}

async fn list_operations(State(app): AppState, Caller(_): Caller) -> Response {
    let list: Vec<Value> = app
        .config
        .operations
        .values()
        .map(|o| {
            json!({
                "name": o.name, "description": o.description, "tool": o.tool,
                "args": o.args.iter().map(|a| a.source()).collect::<Vec<_>>(),
                "dry_run_args": o.dry_run_args.as_ref().map(|d| d.iter().map(|a| a.source()).collect::<Vec<_>>()),
                "approvals": {
                    "count": o.approvals.count,
                    "reviewers": app.approval_rule(&o.approvals, o.service.as_ref()).reviewers,
                },
                "service": o.service,
                "rate": o.rate.map(|x| x.to_string()),
                "approval_timeout": o.approval_timeout.as_secs(),
                "params": o.params.values().map(|p| json!({
                    "name": p.name, "accepts": p.accepts(), "description": p.description,
                    "default": p.default, "allow_leading_dash": p.allow_leading_dash,
                    "required": p.used && p.default.is_none(),
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    json_response(StatusCode::OK, list)
}

/// Body of `POST /api/v1/runs`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ExecBody {
    tool: String,
    #[serde(default)]
    args: Vec<String>,
    #[serde(default)]
    reason: String,
    /// Stream the output in this response when the run starts at once.
    #[serde(default)]
    attach: bool,
}

async fn create_run(
    State(app): AppState,
    Caller(p): Caller,
    ApiJson(b): ApiJson<ExecBody>,
) -> Result<Response, RunError> {
    let c = create::exec(
        &app.svc,
        &p,
        ExecInput {
            tool: b.tool,
            args: b.args,
            reason: b.reason,
            attach: b.attach,
        },
    )
    .await?;
    Ok(created_response(c))
}

/// Body of `POST /api/v1/operations/{name}/runs`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct OperationBody {
    #[serde(default)]
    params: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    reason: String,
    #[serde(default)]
    attach: bool,
    #[serde(default)]
    dry_run: bool,
}

async fn operation_run(
    State(app): AppState,
    Caller(p): Caller,
    Path(name): Path<String>,
    ApiJson(b): ApiJson<OperationBody>,
) -> Result<Response, RunError> {
    let c = operation::run_operation(
        &app.svc,
        &p,
        &name,
        OperationInput {
            params: b.params,
            reason: b.reason,
            attach: b.attach,
            dry_run_only: b.dry_run,
        },
    )
    .await?;
    Ok(created_response(c))
}

async fn list_runs(
    State(app): AppState,
    Caller(p): Caller,
    q: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) = q.map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.body_text()))?;
    let page = airlock_service::proxy::list(&app.svc, &p, &q.params()).await?;
    Ok(with_next(
        json_response(StatusCode::OK, run_views(&page.items)),
        "/api/v1/runs",
        &q,
        page.next,
    ))
}

async fn show_run(
    State(app): AppState,
    Caller(p): Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let run = load(&app, &parse_run_id(&id)?).await?;
    // The run carries its dry-run output: the same rule as the transcript.
    check_reader(&app, &p, &run)?;
    Ok(json_response(StatusCode::OK, run_view(&run)))
}

async fn review_run(
    State(app): AppState,
    Caller(p): Caller,
    Via(surface): Via,
    Path(id): Path<String>,
    ApiJson(b): ApiJson<ReviewBody>,
) -> Result<Response, ApiError> {
    let decision = ReviewDecision::parse(&b.decision)?;
    let run = review::review(
        &app.svc,
        &p,
        parse_run_id(&id)?,
        decision,
        b.comment,
        surface,
    )
    .await?;
    Ok(json_response(StatusCode::OK, run_view(&run)))
}

/// The requester starts an approved run here and streams its output.
async fn start_run(
    State(app): AppState,
    Caller(p): Caller,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, RunError> {
    let _: CommentBody = optional_body(&body)?;
    let c = execution::start(&app.svc, Some(&p), parse_run_id(&id)?, true).await?;
    Ok(match c {
        Created::Stored(run) => json_response(StatusCode::OK, run_view(&run)),
        other => created_response(other),
    })
}

async fn cancel_run(
    State(app): AppState,
    Caller(p): Caller,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let b: CommentBody = optional_body(&body)?;
    let run = review::cancel(&app.svc, &p, parse_run_id(&id)?, b.comment).await?;
    Ok(json_response(StatusCode::OK, run_view(&run)))
}

fn check_reader(app: &App, who: &airlock_core::Principal, run: &Run) -> Result<(), ApiError> {
    if airlock_service::visibility::may_read_run(app, who, run) {
        Ok(())
    } else {
        Err(Error::forbidden(
            "only the requester, a reviewer of this run, an auditor or an admin can read it and its output",
        )
        .into())
    }
}

async fn transcript(
    State(app): AppState,
    Caller(p): Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id = parse_run_id(&id)?;
    let run = load(&app, &id).await?;
    check_reader(&app, &p, &run)?;
    let lookup = id.clone();
    let body = app.svc.db(move |s| s.run_transcript(&lookup)).await?;
    let Some(body) = body else {
        return Err(Error::Conflict {
            current_state: run.state.to_string(),
            message: format!(
                "run `{id}` has no transcript (it has not finished or never ran); follow it with GET /api/v1/runs/{id}/stream"
            ),
        }
        .into());
    };
    let mut resp = (StatusCode::OK, body).into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    if let Some(Ok(v)) = run.transcript_sha256.as_deref().map(HeaderValue::from_str) {
        h.insert("x-airlock-transcript-sha256", v);
    }
    Ok(resp)
}

/// Follows a run: live output if it executes here (what it wrote so far,
/// then the rest), else its stored transcript once it ends; then the final run.
async fn follow(
    State(app): AppState,
    Caller(p): Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id = parse_run_id(&id)?;
    let run = load(&app, &id).await?;
    check_reader(&app, &p, &run)?;
    let (tx, rx) = mpsc::channel(32);
    tokio::spawn(async move {
        let _ = tx.send(json_frame(Kind::Start, &run_view(&run))).await;
        let mut replayed = false;
        if let Some(live) = app.proxy.get(&id) {
            let (so_far, mut more) = live.follow();
            drop(live);
            for (stderr, b) in so_far {
                let kind = if stderr { Kind::Stderr } else { Kind::Stdout };
                if tx.send(frame(kind, &b)).await.is_err() {
                    return;
                }
            }
            loop {
                let f = match more.recv().await {
                    Ok(Chunk::Stdout(b)) => frame(Kind::Stdout, &b),
                    Ok(Chunk::Stderr(b)) => frame(Kind::Stderr, &b),
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => frame(
                        Kind::Note,
                        format!("[airlock: this viewer fell behind; {n} chunks of output skipped]")
                            .as_bytes(),
                    ),
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
                };
                if tx.send(f).await.is_err() {
                    return;
                }
            }
            replayed = true;
        }
        let done = loop {
            match load(&app, &id).await {
                Ok(r) if r.state.is_terminal() => break r,
                Ok(_) => tokio::time::sleep(FOLLOW_POLL).await,
                Err(e) => {
                    let _ = tx
                        .send(json_frame(
                            Kind::Error,
                            &json!({"status": e.status.as_u16(), "detail": e.detail}),
                        ))
                        .await;
                    return;
                }
            }
            if tx.is_closed() {
                return;
            }
        };
        if !replayed {
            let lookup = id.clone();
            if let Ok(Some(t)) = app.svc.db(move |s| s.run_transcript(&lookup)).await {
                if !t.is_empty() {
                    let _ = tx.send(frame(Kind::Stdout, &t)).await;
                }
            }
        }
        let _ = tx.send(json_frame(Kind::End, &run_view(&done))).await;
    });
    Ok(stream_response(rx))
}
