//! HTTP surface: the RBAC v1 binding endpoints, bearer-token authentication
//! (401), the RBAC authorizer's 403 for a read-only identity, `/version`, and
//! `Status` bodies for everything the emulation does not serve.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Json, Router};
use serde_json::{json, Value};

use super::object::{self, Resource};
use super::selector::Selector;
use super::status::ApiError;
use super::store::{ListOptions, Preconditions};
use super::Shared;

const BASE: &str = "/apis/rbac.authorization.k8s.io/v1";

/// Who a bearer token authenticates as.
#[derive(Debug, Clone)]
pub struct Identity {
    /// The user name the authorizer reports.
    pub user: String,
    /// Whether the identity may create, update and delete (otherwise get/list only).
    pub can_write: bool,
}

fn reply(code: u16, body: Value) -> Response {
    let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (status, Json(body)).into_response()
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        reply(self.code, self.body)
    }
}

type Answer = Result<Response, ApiError>;

/// Builds the router over the shared state.
pub fn router(shared: Arc<Shared>) -> Router {
    let not_allowed = || async { ApiError::method_not_allowed() };
    Router::new()
        .route("/version", get(version))
        .route(
            &format!("{BASE}/rolebindings"),
            get(list_all_role_bindings).fallback(not_allowed),
        )
        .route(
            &format!("{BASE}/namespaces/{{ns}}/rolebindings"),
            get(list_role_bindings)
                .post(create_role_binding)
                .fallback(not_allowed),
        )
        .route(
            &format!("{BASE}/namespaces/{{ns}}/rolebindings/{{name}}"),
            get(get_role_binding)
                .put(put_role_binding)
                .delete(delete_role_binding)
                .fallback(not_allowed),
        )
        .route(
            &format!("{BASE}/clusterrolebindings"),
            get(list_cluster_role_bindings)
                .post(create_cluster_role_binding)
                .fallback(not_allowed),
        )
        .route(
            &format!("{BASE}/clusterrolebindings/{{name}}"),
            get(get_cluster_role_binding)
                .put(put_cluster_role_binding)
                .delete(delete_cluster_role_binding)
                .fallback(not_allowed),
        )
        .fallback(|| async { ApiError::path_not_found() })
        .layer(middleware::from_fn_with_state(shared.clone(), gate))
        .with_state(shared)
}

/// Records the request, answers injected outages, then authenticates.
async fn gate(State(shared): State<Arc<Shared>>, mut req: Request, next: Next) -> Response {
    let line = format!(
        "{} {}",
        req.method(),
        req.uri()
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/")
    );
    shared.record(line);
    if let Some(code) = shared.outage() {
        return ApiError::outage(code).into_response();
    }
    let token = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    let Some(identity) = token.and_then(|t| shared.identity(t)) else {
        return ApiError::unauthorized().into_response();
    };
    req.extensions_mut().insert(identity);
    next.run(req).await
}

fn authorize(
    who: &Identity,
    verb: &str,
    resource: Resource,
    name: Option<&str>,
    ns: Option<&str>,
) -> Result<(), ApiError> {
    if who.can_write || verb == "get" || verb == "list" {
        return Ok(());
    }
    Err(ApiError::forbidden(
        &who.user,
        verb,
        resource.plural(),
        name,
        ns,
    ))
}

async fn version() -> Json<Value> {
    Json(json!({
        "major": "1",
        "minor": "32",
        "gitVersion": "v1.32.0-airlock-emulation",
        "platform": "linux/amd64",
    }))
}

type Params = Query<HashMap<String, String>>;

fn dry_run(q: &HashMap<String, String>) -> Result<bool, ApiError> {
    match q.get("dryRun").map(String::as_str) {
        None | Some("") => Ok(false),
        Some("All") => Ok(true),
        Some(other) => Err(ApiError::bad_request(format!(
            "Invalid dry run value: {other}: supported values: \"All\""
        ))),
    }
}

fn list_options(q: &HashMap<String, String>) -> Result<ListOptions, ApiError> {
    if q.get("watch").is_some_and(|w| w == "true" || w == "1") {
        return Err(ApiError::bad_request(
            "watch is not implemented by this emulation",
        ));
    }
    let labels = match q.get("labelSelector") {
        Some(s) => Selector::parse(s).map_err(ApiError::bad_request)?,
        None => Selector::default(),
    };
    let mut fields = Vec::new();
    for term in q
        .get("fieldSelector")
        .map(|s| {
            s.split(',')
                .filter(|t| !t.trim().is_empty())
                .collect::<Vec<_>>()
        })
        .unwrap_or_default()
    {
        let (field, value, equal) = if let Some((f, v)) = term.split_once("!=") {
            (f, v, false)
        } else if let Some((f, v)) = term.split_once("==") {
            (f, v, true)
        } else if let Some((f, v)) = term.split_once('=') {
            (f, v, true)
        } else {
            return Err(ApiError::bad_request(format!(
                "invalid selector: '{term}'; can't understand '{term}'"
            )));
        };
        let field = field.trim();
        if field != "metadata.name" && field != "metadata.namespace" {
            return Err(ApiError::bad_request(format!(
                "field label not supported: {field}"
            )));
        }
        fields.push((field.to_owned(), value.trim().to_owned(), equal));
    }
    let limit = match q.get("limit") {
        None => 0,
        Some(l) => l
            .parse::<i64>()
            .map_err(|_| {
                ApiError::bad_request(format!("limit: Invalid value: {l}: must be an integer"))
            })?
            .max(0) as usize,
    };
    Ok(ListOptions {
        labels,
        fields,
        limit,
        continue_token: q.get("continue").filter(|c| !c.is_empty()).cloned(),
    })
}

fn preconditions(body: &[u8]) -> Result<(Preconditions, bool), ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok((Preconditions::default(), false));
    }
    let v: Value = serde_json::from_slice(body).map_err(|e| {
        ApiError::bad_request(format!("couldn't get version/kind; json parse error: {e}"))
    })?;
    let text = |p: &str| v["preconditions"][p].as_str().map(str::to_owned);
    let dry = match &v["dryRun"] {
        Value::Null => false,
        Value::Array(a) if a.iter().all(|x| x == "All") => !a.is_empty(),
        other => {
            return Err(ApiError::bad_request(format!(
                "Invalid dry run value: {other}: supported values: \"All\""
            )))
        }
    };
    Ok((
        Preconditions {
            uid: text("uid"),
            resource_version: text("resourceVersion"),
        },
        dry,
    ))
}

fn do_list(
    shared: &Shared,
    who: &Identity,
    r: Resource,
    ns: Option<&str>,
    q: &HashMap<String, String>,
) -> Answer {
    authorize(who, "list", r, None, ns)?;
    let opts = list_options(q)?;
    let list = shared.store().list(r, ns, &opts)?;
    Ok(reply(200, list))
}

fn do_create(
    shared: &Shared,
    who: &Identity,
    r: Resource,
    ns: Option<&str>,
    q: &HashMap<String, String>,
    body: &[u8],
) -> Answer {
    authorize(who, "create", r, None, ns)?;
    let dry = dry_run(q)?;
    let b = object::decode(r, body)?;
    let created = shared.store().create(r, ns, b, dry)?;
    Ok(reply(
        201,
        serde_json::to_value(created).unwrap_or(Value::Null),
    ))
}

fn do_get(shared: &Shared, who: &Identity, r: Resource, ns: Option<&str>, name: &str) -> Answer {
    authorize(who, "get", r, Some(name), ns)?;
    let b = shared.store().get(r, ns, name)?;
    Ok(reply(200, serde_json::to_value(b).unwrap_or(Value::Null)))
}

fn do_put(
    shared: &Shared,
    who: &Identity,
    r: Resource,
    ns: Option<&str>,
    name: &str,
    q: &HashMap<String, String>,
    body: &[u8],
) -> Answer {
    authorize(who, "update", r, Some(name), ns)?;
    let dry = dry_run(q)?;
    let b = object::decode(r, body)?;
    let (stored, created) = shared.store().update(r, ns, name, b, dry)?;
    let code = if created { 201 } else { 200 };
    Ok(reply(
        code,
        serde_json::to_value(stored).unwrap_or(Value::Null),
    ))
}

fn do_delete(
    shared: &Shared,
    who: &Identity,
    r: Resource,
    ns: Option<&str>,
    name: &str,
    q: &HashMap<String, String>,
    body: &[u8],
) -> Answer {
    authorize(who, "delete", r, Some(name), ns)?;
    let (pre, dry_body) = preconditions(body)?;
    let dry = dry_run(q)? || dry_body;
    let status = shared.store().delete(r, ns, name, &pre, dry)?;
    Ok(reply(200, status))
}

async fn list_all_role_bindings(
    State(s): State<Arc<Shared>>,
    Extension(who): Extension<Identity>,
    Query(q): Params,
) -> Answer {
    do_list(&s, &who, Resource::RoleBindings, None, &q)
}

async fn list_role_bindings(
    State(s): State<Arc<Shared>>,
    Extension(who): Extension<Identity>,
    Path(ns): Path<String>,
    Query(q): Params,
) -> Answer {
    do_list(&s, &who, Resource::RoleBindings, Some(&ns), &q)
}

async fn create_role_binding(
    State(s): State<Arc<Shared>>,
    Extension(who): Extension<Identity>,
    Path(ns): Path<String>,
    Query(q): Params,
    body: Bytes,
) -> Answer {
    do_create(&s, &who, Resource::RoleBindings, Some(&ns), &q, &body)
}

async fn get_role_binding(
    State(s): State<Arc<Shared>>,
    Extension(who): Extension<Identity>,
    Path((ns, name)): Path<(String, String)>,
) -> Answer {
    do_get(&s, &who, Resource::RoleBindings, Some(&ns), &name)
}

async fn put_role_binding(
    State(s): State<Arc<Shared>>,
    Extension(who): Extension<Identity>,
    Path((ns, name)): Path<(String, String)>,
    Query(q): Params,
    body: Bytes,
) -> Answer {
    do_put(
        &s,
        &who,
        Resource::RoleBindings,
        Some(&ns),
        &name,
        &q,
        &body,
    )
}

async fn delete_role_binding(
    State(s): State<Arc<Shared>>,
    Extension(who): Extension<Identity>,
    Path((ns, name)): Path<(String, String)>,
    Query(q): Params,
    body: Bytes,
) -> Answer {
    do_delete(
        &s,
        &who,
        Resource::RoleBindings,
        Some(&ns),
        &name,
        &q,
        &body,
    )
}

async fn list_cluster_role_bindings(
    State(s): State<Arc<Shared>>,
    Extension(who): Extension<Identity>,
    Query(q): Params,
) -> Answer {
    do_list(&s, &who, Resource::ClusterRoleBindings, None, &q)
}

async fn create_cluster_role_binding(
    State(s): State<Arc<Shared>>,
    Extension(who): Extension<Identity>,
    Query(q): Params,
    body: Bytes,
) -> Answer {
    do_create(&s, &who, Resource::ClusterRoleBindings, None, &q, &body)
}

async fn get_cluster_role_binding(
    State(s): State<Arc<Shared>>,
    Extension(who): Extension<Identity>,
    Path(name): Path<String>,
) -> Answer {
    do_get(&s, &who, Resource::ClusterRoleBindings, None, &name)
}

async fn put_cluster_role_binding(
    State(s): State<Arc<Shared>>,
    Extension(who): Extension<Identity>,
    Path(name): Path<String>,
    Query(q): Params,
    body: Bytes,
) -> Answer {
    do_put(
        &s,
        &who,
        Resource::ClusterRoleBindings,
        None,
        &name,
        &q,
        &body,
    )
}

async fn delete_cluster_role_binding(
    State(s): State<Arc<Shared>>,
    Extension(who): Extension<Identity>,
    Path(name): Path<String>,
    Query(q): Params,
    body: Bytes,
) -> Answer {
    do_delete(
        &s,
        &who,
        Resource::ClusterRoleBindings,
        None,
        &name,
        &q,
        &body,
    )
}
