//! REST JSON API under `/api/v1`, plus `/healthz`, `/readyz`, `/metrics`.
//! Handlers are thin: parse strictly (unknown fields refused, 64 KiB cap),
//! authenticate, call `lifecycle`, render.

use std::sync::Arc;

use airlock_core::audit_chain::AuditEvent;
use airlock_core::request::{RequestId, RequestState, ReviewDecision};
use airlock_core::{Error, GroupName, Span, UserName};
use airlock_store::{RequestFilter, TokenRecord};
use axum::body::Bytes;
use axum::extract::{FromRequest, Path, Query, Request as HttpRequest, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::app::App;
use crate::auth::{hash_token, new_token, Caller};
use crate::problem::ApiError;
use airlock_service::audit::verify_audit_chain;
use airlock_service::lifecycle::{self, fmt_time};
use airlock_service::views::{request_view, request_views};

/// Largest request body accepted.
pub const MAX_BODY: usize = 64 * 1024;

/// The OpenAPI document served at `/api/v1/openapi.json`.
pub const OPENAPI: &str = include_str!("openapi.json");

type AppState = State<Arc<App>>;

/// JSON body extractor whose every failure is a problem+json 4xx.
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: HttpRequest, state: &S) -> Result<Self, ApiError> {
        let bytes = Bytes::from_request(req, state).await.map_err(|e| {
            let status = e.status();
            if status == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::new(
                    status,
                    format!("request body is larger than {MAX_BODY} bytes"),
                )
            } else {
                ApiError::new(status, format!("could not read request body: {e}"))
            }
        })?;
        serde_json::from_slice(&bytes)
            .map(ApiJson)
            .map_err(|e| ApiError {
                field: None,
                ..ApiError::new(StatusCode::BAD_REQUEST, format!("invalid JSON body: {e}"))
            })
    }
}

fn json_response(status: StatusCode, v: impl serde::Serialize) -> Response {
    (status, axum::Json(v)).into_response()
}

/// A JSON response (for sibling route modules).
pub(crate) fn json(status: StatusCode, v: impl serde::Serialize) -> Response {
    json_response(status, v)
}

fn parse_id(s: &str) -> Result<RequestId, ApiError> {
    Ok(RequestId::parse(s)?)
}

/// Builds the router.
pub fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_main))
        .route(
            "/api/v1/openapi.json",
            get(|| async { ([(header::CONTENT_TYPE, "application/json")], OPENAPI) }),
        )
        .route("/api/v1/whoami", get(whoami))
        .route("/api/v1/entitlements", get(entitlements))
        .route("/api/v1/requests", post(create_request).get(list_requests))
        .route("/api/v1/breakglass", post(create_breakglass))
        .route("/api/v1/requests/{id}", get(show_request))
        .route("/api/v1/requests/{id}/reviews", post(review_request))
        .route("/api/v1/requests/{id}/withdraw", post(withdraw_request))
        .route("/api/v1/requests/{id}/revoke", post(revoke_request))
        .route(
            "/api/v1/requests/{id}/credentials",
            get(credentials).post(credentials_post),
        )
        .route("/api/v1/grants", get(grants))
        .route("/api/v1/drift", get(drift))
        .route("/api/v1/providers/{name}/ssh/krl", get(ssh_krl))
        .route("/api/v1/providers/{name}/ssh/ca.pub", get(ssh_ca_pub))
        .route("/api/v1/audit/events", get(audit_events))
        .route("/api/v1/audit/verify", get(audit_verify))
        .route("/api/v1/audit/pubkey", get(audit_pubkey))
        .route(
            "/api/v1/audit/checkpoint",
            get(crate::audit_api::checkpoint),
        )
        .route(
            "/api/v1/audit/consistency",
            get(crate::audit_api::consistency),
        )
        .route("/api/v1/audit/proof/{seq}", get(crate::audit_api::proof))
        .route(
            "/api/v1/tokens",
            post(create_token).get(crate::access_api::list_tokens),
        )
        .route(
            "/api/v1/tokens/revoke",
            post(crate::access_api::revoke_tokens),
        )
        .route(
            "/api/v1/locks",
            get(crate::access_api::list_locks).post(crate::access_api::create_lock),
        )
        .route(
            "/api/v1/locks/{kind}/{name}",
            axum::routing::delete(crate::access_api::remove_lock),
        )
        .route(
            "/api/v1/users/{name}/rebind",
            post(crate::access_api::rebind_user),
        )
        .route(
            "/api/v1/slack/interactions",
            post(crate::slack_interactions::handle),
        )
        .merge(crate::runs_api::routes())
        .merge(crate::gateway_api::routes())
        .merge(crate::web::routes())
        .merge(crate::oidc::routes())
        .fallback(|| async {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "no such endpoint; see /api/v1/openapi.json",
            )
        })
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
        .with_state(app)
}

async fn readyz(State(app): AppState) -> Result<&'static str, ApiError> {
    app.svc.db(|s| s.ping()).await?;
    Ok("ready")
}

/// The router of `[server] metrics_listen`: `/metrics` only.
pub fn metrics_router(app: Arc<App>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "only /metrics is served here") })
        .with_state(app)
}

/// `/metrics` on the main listener: 404 when a separate `metrics_listen` serves it.
async fn metrics_main(
    state: AppState,
    headers: axum::http::HeaderMap,
) -> Result<Response, ApiError> {
    if state.0.config.server.metrics_listen.is_some() {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "no such endpoint; see /api/v1/openapi.json",
        ));
    }
    metrics(state, headers).await
}

/// Whether the request carries `Authorization: Bearer <metrics_token>`
/// (compared in constant time: digests of equal length, every byte looked at).
fn metrics_authorized(app: &App, headers: &axum::http::HeaderMap) -> bool {
    let Some(want) = &app.config.server.metrics_token else {
        return true;
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    let (a, b) = (hash_token(given), hash_token(want));
    a.iter()
        .zip(b.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y))
        == 0
}

async fn metrics(
    State(app): AppState,
    headers: axum::http::HeaderMap,
) -> Result<Response, ApiError> {
    if !metrics_authorized(&app, &headers) {
        return Ok((
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            "metrics need Authorization: Bearer <[server] metrics_token>\n",
        )
            .into_response());
    }
    let text = airlock_service::metrics::scrape(&app.svc).await?;
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response())
}

async fn whoami(Caller(p): Caller) -> Response {
    json_response(StatusCode::OK, p)
}

async fn entitlements(State(app): AppState, Caller(_): Caller) -> Response {
    let list: Vec<Value> = app
        .config
        .entitlements
        .values()
        .map(|e| {
            let rule = app.approval_rule(&e.approvals, e.service.as_ref());
            json!({
                "name": e.name, "description": e.description, "provider": e.provider,
                "max_duration": e.max_duration.as_secs(), "breakglass": e.breakglass,
                "approvals": {"count": rule.count, "reviewers": rule.reviewers},
                "service": e.service, "mfa": e.mfa,
                "reason": {"required": e.reason.required, "pattern": e.reason.pattern.as_ref().map(|p| p.as_str())},
                "requesters": e.requesters, "approval_timeout": e.approval_timeout.as_secs(),
            })
        })
        .collect();
    json_response(StatusCode::OK, list)
}

/// Body of `POST /api/v1/requests` and `POST /api/v1/breakglass`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct NewRequest {
    pub(crate) entitlement: String,
    pub(crate) duration: String,
    #[serde(default)]
    pub(crate) reason: String,
    /// RFC 3339 or `+DURATION`: the grant starts then, not on approval.
    #[serde(default)]
    pub(crate) start: Option<String>,
}

async fn create_request(
    State(app): AppState,
    Caller(p): Caller,
    ApiJson(b): ApiJson<NewRequest>,
) -> Result<Response, ApiError> {
    create(&app, &p, b, false).await
}

async fn create_breakglass(
    State(app): AppState,
    Caller(p): Caller,
    ApiJson(b): ApiJson<NewRequest>,
) -> Result<Response, ApiError> {
    create(&app, &p, b, true).await
}

async fn create(
    app: &App,
    p: &airlock_core::Principal,
    b: NewRequest,
    breakglass: bool,
) -> Result<Response, ApiError> {
    let r = lifecycle::create(
        &app.svc,
        p,
        &b.entitlement,
        &b.duration,
        &b.reason,
        breakglass,
        b.start.as_deref(),
    )
    .await?;
    Ok(json_response(StatusCode::CREATED, request_view(&r)))
}

/// `?state=&mine=&to_review=&limit=` for request and run lists.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ListQuery {
    pub state: Option<String>,
    #[serde(default)]
    pub mine: bool,
    #[serde(default)]
    pub to_review: bool,
    pub limit: Option<u32>,
    /// From the previous page's `Link: <…>; rel="next"` header.
    pub cursor: Option<String>,
}

impl ListQuery {
    /// Items per page: `limit`, default 100, at most 1,000.
    pub fn page_limit(&self) -> u32 {
        self.limit
            .unwrap_or(airlock_api::page::DEFAULT_LIMIT)
            .min(airlock_api::page::MAX_LIMIT)
    }

    /// What the service lists.
    pub fn params(&self) -> airlock_service::page::ListParams {
        airlock_service::page::ListParams {
            state: self.state.clone(),
            mine: self.mine,
            to_review: self.to_review,
            limit: self.page_limit(),
            cursor: self.cursor.clone(),
        }
    }
}

async fn list_requests(
    State(app): AppState,
    Caller(p): Caller,
    q: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) = q.map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.body_text()))?;
    let page = lifecycle::list(&app.svc, &p, &q.params()).await?;
    Ok(with_next(
        json_response(StatusCode::OK, request_views(&page.items)),
        "/api/v1/requests",
        &q,
        page.next,
    ))
}

/// Adds `Link: <PATH?…&cursor=C>; rel="next"` (RFC 8288) when there is a next page.
pub(crate) fn with_next(
    mut resp: Response,
    path: &str,
    q: &ListQuery,
    next: Option<String>,
) -> Response {
    if let Some(c) = next {
        let mut query = vec![format!("cursor={c}"), format!("limit={}", q.page_limit())];
        if let Some(s) = &q.state {
            query.push(format!("state={s}"));
        }
        if q.mine {
            query.push("mine=true".into());
        }
        if q.to_review {
            query.push("to_review=true".into());
        }
        let link = airlock_api::page::next_link_header(path, &query);
        if let Ok(v) = header::HeaderValue::from_str(&link) {
            resp.headers_mut().insert(header::LINK, v);
        }
    }
    resp
}

async fn show_request(
    State(app): AppState,
    Caller(p): Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id = parse_id(&id)?;
    let lookup = id.clone();
    let r = app
        .svc
        .db_untracked(move |s| s.get_request(&lookup))
        .await?
        .filter(|r| airlock_service::visibility::may_read_request(&app, &p, r))
        .ok_or_else(|| airlock_service::visibility::hidden(format!("request `{id}`")))?;
    Ok(json_response(StatusCode::OK, request_view(&r)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ReviewBody {
    pub(crate) decision: String,
    pub(crate) comment: Option<String>,
}

async fn review_request(
    State(app): AppState,
    Caller(p): Caller,
    crate::auth::Via(surface): crate::auth::Via,
    Path(id): Path<String>,
    ApiJson(b): ApiJson<ReviewBody>,
) -> Result<Response, ApiError> {
    let decision = ReviewDecision::parse(&b.decision)?;
    let r = lifecycle::review(&app.svc, &p, parse_id(&id)?, decision, b.comment, surface).await?;
    Ok(json_response(StatusCode::OK, request_view(&r)))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct CommentBody {
    pub(crate) comment: Option<String>,
}

pub(crate) fn optional_body<T: DeserializeOwned + Default>(bytes: &Bytes) -> Result<T, ApiError> {
    if bytes.iter().all(|b| b.is_ascii_whitespace()) {
        return Ok(T::default());
    }
    serde_json::from_slice(bytes)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, format!("invalid JSON body: {e}")))
}

async fn withdraw_request(
    State(app): AppState,
    Caller(p): Caller,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let _: CommentBody = optional_body(&body)?;
    let r = lifecycle::withdraw(&app.svc, &p, parse_id(&id)?).await?;
    Ok(json_response(StatusCode::OK, request_view(&r)))
}

async fn revoke_request(
    State(app): AppState,
    Caller(p): Caller,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let b: CommentBody = optional_body(&body)?;
    let r = lifecycle::revoke(&app.svc, &p, parse_id(&id)?, b.comment).await?;
    Ok(json_response(StatusCode::OK, request_view(&r)))
}

async fn credentials(
    State(app): AppState,
    Caller(p): Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let c = lifecycle::credentials(&app.svc, &p, parse_id(&id)?, None).await?;
    Ok(json_response(StatusCode::OK, c))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct CredentialsBody {
    pub(crate) public_key: Option<String>,
}

/// POST form: carries the public key to certify (ssh).
async fn credentials_post(
    State(app): AppState,
    Caller(p): Caller,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let b: CredentialsBody = optional_body(&body)?;
    let c = lifecycle::credentials(&app.svc, &p, parse_id(&id)?, b.public_key).await?;
    Ok(json_response(StatusCode::OK, c))
}

async fn grants(State(app): AppState, Caller(p): Caller) -> Result<Response, ApiError> {
    let filter = RequestFilter {
        state: Some(RequestState::Active),
        visible_to: airlock_service::visibility::request_scope(&app, &p),
        limit: 1000,
        ..Default::default()
    };
    let list = app.svc.db(move |s| s.list_requests(&filter)).await?;
    Ok(json_response(StatusCode::OK, request_views(&list)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DriftQuery {
    provider: Option<String>,
}

async fn drift(
    State(app): AppState,
    Caller(p): Caller,
    q: Result<Query<DriftQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) = q.map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.body_text()))?;
    if !p.admin {
        return Err(Error::forbidden(
            "only admins can read drift reports (they name who holds access outside airlock)",
        )
        .into());
    }
    let only = match &q.provider {
        Some(name) => Some(configured_provider(&app, name)?),
        None => None,
    };
    let report = airlock_service::drift::report(&app.svc, only.as_ref()).await;
    Ok(json_response(
        StatusCode::OK,
        json!({ "providers": report }),
    ))
}

fn configured_provider(app: &App, name: &str) -> Result<airlock_core::ProviderName, ApiError> {
    airlock_core::ProviderName::parse(name)
        .ok()
        .filter(|n| app.providers.contains_key(n))
        .ok_or_else(|| {
            Error::not_found(format!(
                "provider `{}` (configured: {})",
                name.chars().take(64).collect::<String>(),
                app.providers
                    .keys()
                    .map(|k| k.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
            .into()
        })
}

/// The named provider's certificate authority, or 404 naming its kind.
fn certificate_authority(
    app: &App,
    name: &str,
) -> Result<Arc<dyn airlock_providers::Provider>, ApiError> {
    let pname = configured_provider(app, name)?;
    let provider = app.provider(&pname)?;
    if provider.certificate_authority().is_none() {
        return Err(Error::not_found(format!(
            "SSH certificate authority: provider `{pname}` is kind {}, not ssh",
            provider.kind()
        ))
        .into());
    }
    Ok(provider)
}

/// The KRL naming every certificate whose grant ended early and that would
/// still be valid. Unauthenticated on purpose: hosts fetch it from cron, and
/// it holds only serial numbers.
async fn ssh_krl(State(app): AppState, Path(name): Path<String>) -> Result<Response, ApiError> {
    let provider = certificate_authority(&app, &name)?;
    let pname = provider.name().to_string();
    let now = app.now();
    let serials = app
        .svc
        .db(move |s| s.revoked_certificates(&pname, now))
        .await?;
    let ca = provider
        .certificate_authority()
        .expect("checked by certificate_authority()");
    let krl = ca
        .revocation_list(&serials)
        .map_err(airlock_service::ServiceError::from)?;
    Ok((
        [
            (header::CONTENT_TYPE, "application/octet-stream"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        krl,
    )
        .into_response())
}

/// The CA public key for sshd's `TrustedUserCAKeys` (public, unauthenticated).
async fn ssh_ca_pub(State(app): AppState, Path(name): Path<String>) -> Result<Response, ApiError> {
    let provider = certificate_authority(&app, &name)?;
    let line = provider
        .certificate_authority()
        .expect("checked by certificate_authority()")
        .public_key();
    Ok((
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        format!("{}\n", line.trim_end()),
    )
        .into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EventsQuery {
    since: Option<u64>,
    limit: Option<u32>,
}

async fn audit_events(
    State(app): AppState,
    Caller(p): Caller,
    q: Result<Query<EventsQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    airlock_service::visibility::check_audit_reader(&app, &p)?;
    let Query(q) = q.map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.body_text()))?;
    let since = q.since.unwrap_or(0);
    let limit = q.limit.unwrap_or(1000).clamp(1, 10_000);
    let sealed = app.svc.db(move |s| s.audit_events(since, limit)).await?;
    let events: Vec<AuditEvent> = sealed.iter().filter_map(|e| e.to_event()).collect();
    Ok(json_response(StatusCode::OK, events))
}

async fn audit_verify(State(app): AppState, Caller(p): Caller) -> Result<Response, ApiError> {
    airlock_service::visibility::check_audit_reader(&app, &p)?;
    let report = verify_audit_chain(&app.svc).await?;
    Ok(json_response(StatusCode::OK, report))
}

async fn audit_pubkey(State(app): AppState) -> Response {
    json_response(
        StatusCode::OK,
        json!({"algorithm": "ed25519", "public_key": hex::encode(app.keys.signing.verifying_key().to_bytes()),
            "verifier_key": app.tlog.signer.verifier_key().encode(), "origin": app.tlog.signer.origin()}),
    )
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TokenBody {
    pub(crate) user: String,
    #[serde(default)]
    pub(crate) groups: Vec<String>,
    pub(crate) ttl: Option<String>,
    #[serde(default)]
    pub(crate) admin: bool,
}

/// Longest token lifetime.
const MAX_TOKEN_TTL_SECS: u64 = 366 * 86400;

async fn create_token(
    State(app): AppState,
    Caller(p): Caller,
    ApiJson(b): ApiJson<TokenBody>,
) -> Result<Response, ApiError> {
    if !p.admin {
        return Err(Error::forbidden("only admins can create tokens").into());
    }
    let user = UserName::parse(&b.user)?;
    crate::identity::check_login_name(&app, &user)?;
    let groups = b
        .groups
        .iter()
        .map(|g| GroupName::parse(g))
        .collect::<Result<Vec<_>, _>>()?;
    if groups.len() > 64 {
        return Err(Error::invalid("groups", "more than 64 groups").into());
    }
    let ttl: Span = match &b.ttl {
        Some(t) => t
            .parse()
            .map_err(|e: airlock_core::duration::SpanError| Error::invalid("ttl", e.to_string()))?,
        None => Span::from_secs(30 * 86400).expect("valid"),
    };
    if ttl.as_secs() > MAX_TOKEN_TTL_SECS {
        return Err(Error::invalid("ttl", "longer than 366d").into());
    }
    let now = app.now();
    let token = new_token();
    let rec = TokenRecord {
        hash: hash_token(&token),
        user: user.clone(),
        groups: groups.clone(),
        admin: b.admin,
        created_by: p.name.to_string(),
        created_at: now,
        expires_at: now + ttl.to_time(),
        revoked: false,
        mfa: false,
        parent: None,
        last_used_at: None,
    };
    let audit = airlock_core::audit_chain::AuditDraft::new(
        "token.created",
        p.name.as_str(),
        format!("user:{user}"),
        json!({"groups": groups, "admin": b.admin, "expires_at": fmt_time(rec.expires_at), "token_sha256_prefix": rec.prefix()}),
    );
    let expires = rec.expires_at;
    app.svc
        .db(move |s| s.insert_token(&rec, &audit, now))
        .await?;
    Ok(json_response(
        StatusCode::CREATED,
        json!({"token": token, "user": user, "groups": groups, "admin": b.admin, "expires_at": fmt_time(expires)}),
    ))
}
