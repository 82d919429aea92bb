//! GCP IAM emulation: Cloud Resource Manager's `getIamPolicy`,
//! `setIamPolicy` and `testIamPermissions` (v3 for projects, folders and
//! organizations; v1 for projects and organizations), Google's OAuth 2.0 token
//! endpoint for service-account keys, and the GCE metadata server's token
//! path, all on one 127.0.0.1 port inside the test process.
//!
//! Semantics follow the documentation: every successful `setIamPolicy`
//! changes the etag; a stale etag fails with 409 ABORTED; a request without
//! etag overwrites; conditional bindings need version 3 on both read and
//! write; unknown resources and callers without permission get 403; API calls
//! need a bearer token from the token endpoint (401 UNAUTHENTICATED otherwise).

mod oauth;
mod policy;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Form, Json, Router};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde::Deserialize;
use serde_json::json;
use time::OffsetDateTime;

pub use policy::{Binding, Condition, Expr, Policy};

/// The OAuth scope Resource Manager calls need.
pub const CLOUD_PLATFORM_SCOPE: &str = "https://www.googleapis.com/auth/cloud-platform";
/// Google's limit on principal occurrences in one allow policy.
pub const DEFAULT_MEMBER_LIMIT: usize = 1500;
/// The etag of a resource that never had a policy set.
const EMPTY_POLICY_ETAG: &str = "ACAB";

type Hook = Box<dyn FnOnce(&mut Policy) + Send>;

/// A running emulation. Dropping it stops the server.
pub struct GcpEmulator {
    state: Arc<Shared>,
    base_url: String,
    task: tokio::task::JoinHandle<()>,
}

struct Shared {
    token_uri: String,
    inner: Mutex<Inner>,
}

/// Counters a test or benchmark can read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Access tokens issued (token endpoint and metadata server).
    pub tokens_issued: u64,
    /// `getIamPolicy` calls answered with a policy.
    pub gets: u64,
    /// `setIamPolicy` calls that changed the policy.
    pub sets: u64,
    /// `setIamPolicy` calls refused for a stale etag (409 ABORTED).
    pub conflicts: u64,
}

struct Inner {
    policies: HashMap<String, Policy>,
    keys: HashMap<String, oauth::RegisteredKey>,
    tokens: HashMap<String, (String, OffsetDateTime)>,
    denied: HashSet<String>,
    metadata_account: Option<String>,
    token_lifetime: Duration,
    member_limit: usize,
    next_etag: u64,
    next_key: u64,
    after_get: HashMap<String, Hook>,
    stats: Stats,
}

impl Inner {
    fn new_etag(&mut self) -> String {
        self.next_etag += 1;
        // Real etags are 8 opaque bytes in base64 (e.g. `BwXhqDuYl6A=`).
        let mut b = self.next_etag.to_be_bytes();
        b[0] = 0x07;
        STANDARD.encode(b)
    }

    fn issue_token(&mut self, email: String) -> serde_json::Value {
        let token = oauth::new_access_token();
        let lifetime = self.token_lifetime;
        let expiry = OffsetDateTime::now_utc() + lifetime;
        self.tokens.insert(token.clone(), (email, expiry));
        self.stats.tokens_issued += 1;
        json!({
            "access_token": token,
            "expires_in": lifetime.as_secs(),
            "token_type": "Bearer",
        })
    }
}

impl GcpEmulator {
    /// Starts the emulation on 127.0.0.1 with an ephemeral port, on the current runtime.
    pub async fn start() -> GcpEmulator {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0 for the GCP emulation");
        let addr = listener.local_addr().expect("local address");
        let base_url = format!("http://{addr}");
        let state = Arc::new(Shared {
            token_uri: format!("{base_url}/token"),
            inner: Mutex::new(Inner {
                policies: HashMap::new(),
                keys: HashMap::new(),
                tokens: HashMap::new(),
                denied: HashSet::new(),
                metadata_account: None,
                token_lifetime: Duration::from_secs(3600),
                member_limit: DEFAULT_MEMBER_LIMIT,
                next_etag: u64::from(addr.port()) << 32,
                next_key: 0,
                after_get: HashMap::new(),
                stats: Stats::default(),
            }),
        });
        let app = Router::new()
            .route("/token", post(token))
            .route(
                "/computeMetadata/v1/instance/service-accounts/default/token",
                get(metadata_token),
            )
            .route("/v1/{*rest}", post(iam_v1))
            .route("/v3/{*rest}", post(iam_v3))
            .fallback(|| async { not_found() })
            .with_state(state.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        GcpEmulator {
            state,
            base_url,
            task,
        }
    }

    fn inner(&self) -> MutexGuard<'_, Inner> {
        lock(&self.state)
    }

    /// Base URL of the Resource Manager API (the provider's `endpoint`).
    pub fn endpoint(&self) -> &str {
        &self.base_url
    }

    /// The token endpoint (`token_uri` of the keys this emulation issues).
    pub fn token_uri(&self) -> &str {
        &self.state.token_uri
    }

    /// `host:port` of the metadata server, the value for `GCE_METADATA_HOST`.
    pub fn metadata_host(&self) -> &str {
        self.base_url.trim_start_matches("http://")
    }

    /// Creates `resource` (`projects/ID`, `folders/ID`, `organizations/ID`) with `policy`
    /// (or replaces its policy, as another administrator would); returns the new etag.
    pub fn seed_policy(&self, resource: &str, mut policy: Policy) -> String {
        let mut inner = self.inner();
        policy.version = policy.effective_version();
        policy.etag = inner.new_etag();
        let etag = policy.etag.clone();
        inner.policies.insert(resource.into(), policy);
        etag
    }

    /// Creates `resource` with an empty policy.
    pub fn create_resource(&self, resource: &str) {
        self.inner().policies.insert(
            resource.into(),
            Policy {
                version: 1,
                etag: EMPTY_POLICY_ETAG.into(),
                ..Default::default()
            },
        );
    }

    /// The stored policy in full (version 3 view), if the resource exists.
    pub fn policy(&self, resource: &str) -> Option<Policy> {
        self.inner().policies.get(resource).cloned()
    }

    /// Whether IAM would let `member` use `role` on `resource` at `at`,
    /// evaluating `request.time` conditions (native expiry).
    pub fn has_role(&self, resource: &str, member: &str, role: &str, at: OffsetDateTime) -> bool {
        self.inner()
            .policies
            .get(resource)
            .is_some_and(|p| p.has_role(member, role, at))
    }

    /// Runs `edit` on the stored policy right after the next `getIamPolicy` of
    /// `resource` has been answered, and gives it a new etag: another
    /// administrator writing between a client's read and its write.
    pub fn after_next_get(&self, resource: &str, edit: impl FnOnce(&mut Policy) + Send + 'static) {
        self.inner()
            .after_get
            .insert(resource.into(), Box::new(edit));
    }

    /// Creates a service-account key for `email`; returns the key file JSON
    /// (its `token_uri` points at this emulation).
    pub fn create_service_account_key(&self, email: &str) -> serde_json::Value {
        let mut inner = self.inner();
        inner.next_key += 1;
        let kid = format!(
            "{:040x}",
            u128::from(inner.next_key) * 0x9e37_79b9_7f4a_7c15
        );
        let (registered, json) = oauth::new_key(email, &kid, &self.state.token_uri);
        inner.keys.insert(kid, registered);
        json
    }

    /// Deletes a key by id: assertions signed with it fail from now on.
    pub fn delete_service_account_key(&self, private_key_id: &str) {
        self.inner().keys.remove(private_key_id);
    }

    /// Makes the metadata server hand out tokens for `email`.
    pub fn set_metadata_account(&self, email: &str) {
        self.inner().metadata_account = Some(email.into());
    }

    /// Makes every API call by `email` fail with 403 PERMISSION_DENIED.
    pub fn deny(&self, email: &str) {
        self.inner().denied.insert(email.into());
    }

    /// Invalidates every issued access token (as after a credential revocation).
    pub fn revoke_tokens(&self) {
        self.inner().tokens.clear();
    }

    /// Lifetime of tokens issued from now on (default one hour).
    pub fn set_token_lifetime(&self, lifetime: Duration) {
        self.inner().token_lifetime = lifetime;
    }

    /// Principal-occurrence limit per policy (default 1,500, as Google's).
    pub fn set_member_limit(&self, limit: usize) {
        self.inner().member_limit = limit;
    }

    /// Counters since start.
    pub fn stats(&self) -> Stats {
        self.inner().stats
    }
}

impl Drop for GcpEmulator {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn lock(shared: &Shared) -> MutexGuard<'_, Inner> {
    // A panicking test thread must not wedge the other tests' emulation.
    shared.inner.lock().unwrap_or_else(|e| e.into_inner())
}

/// A Google API error: `{"error": {"code", "message", "status"}}`.
fn google_error(code: StatusCode, status: &str, message: impl Into<String>) -> Response {
    let body =
        json!({"error": {"code": code.as_u16(), "message": message.into(), "status": status}});
    (code, Json(body)).into_response()
}

fn invalid_argument(message: impl Into<String>) -> Response {
    google_error(StatusCode::BAD_REQUEST, "INVALID_ARGUMENT", message)
}

#[derive(Deserialize)]
struct TokenForm {
    grant_type: Option<String>,
    assertion: Option<String>,
}

fn oauth_error(error: &str, description: &str) -> Response {
    (
        StatusCode::BAD_REQUEST,
        Json(json!({"error": error, "error_description": description})),
    )
        .into_response()
}

async fn token(
    State(state): State<Arc<Shared>>,
    form: Result<Form<TokenForm>, axum::extract::rejection::FormRejection>,
) -> Response {
    let Ok(Form(form)) = form else {
        return oauth_error(
            "invalid_request",
            "Request must be application/x-www-form-urlencoded.",
        );
    };
    if form.grant_type.as_deref() != Some(oauth::JWT_BEARER) {
        return oauth_error(
            "unsupported_grant_type",
            &format!(
                "Invalid grant_type: {}",
                form.grant_type.unwrap_or_default()
            ),
        );
    }
    let Some(assertion) = form.assertion else {
        return oauth_error("invalid_request", "Missing required parameter: assertion");
    };
    let mut inner = lock(&state);
    let verified = oauth::verify_assertion(
        &assertion,
        &state.token_uri,
        OffsetDateTime::now_utc(),
        |kid, iss| match kid {
            Some(kid) => inner.keys.get(kid).into_iter().collect(),
            None => inner.keys.values().filter(|k| k.email == iss).collect(),
        },
    );
    match verified {
        Ok(email) => Json(inner.issue_token(email)).into_response(),
        Err(e) => oauth_error(e.error, &e.description),
    }
}

async fn metadata_token(State(state): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    if headers.get("metadata-flavor").and_then(|v| v.to_str().ok()) != Some("Google") {
        return (
            StatusCode::FORBIDDEN,
            "Missing Metadata-Flavor:Google header.",
        )
            .into_response();
    }
    let mut inner = lock(&state);
    match inner.metadata_account.clone() {
        Some(email) => Json(inner.issue_token(email)).into_response(),
        None => (
            StatusCode::NOT_FOUND,
            "No service account is attached to this instance.",
        )
            .into_response(),
    }
}

async fn iam_v1(
    state: State<Arc<Shared>>,
    Path(rest): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    iam(state, "v1", &rest, &headers, &body)
}

async fn iam_v3(
    state: State<Arc<Shared>>,
    Path(rest): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    iam(state, "v3", &rest, &headers, &body)
}

/// `projects` -> `project`, for permission names.
fn resource_kind(resource: &str, api: &str) -> Option<&'static str> {
    let (collection, id) = resource.split_once('/')?;
    if id.is_empty() || id.contains('/') {
        return None;
    }
    match (api, collection) {
        (_, "projects") => Some("projects"),
        (_, "organizations") => Some("organizations"),
        ("v3", "folders") => Some("folders"),
        _ => None,
    }
}

fn iam(
    State(state): State<Arc<Shared>>,
    api: &str,
    rest: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> Response {
    let Some((resource, method)) = rest.rsplit_once(':') else {
        return not_found();
    };
    let Some(kind) = resource_kind(resource, api) else {
        return not_found();
    };
    let permission = |verb: &str| format!("resourcemanager.{kind}.{verb}");
    let mut inner = lock(&state);
    let bearer = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let caller = bearer
        .and_then(|t| inner.tokens.get(t))
        .and_then(|(email, expiry)| (*expiry > OffsetDateTime::now_utc()).then(|| email.clone()));
    let Some(caller) = caller else {
        return google_error(
            StatusCode::UNAUTHORIZED,
            "UNAUTHENTICATED",
            "Request had invalid authentication credentials. Expected OAuth 2 access token, \
             login cookie or other valid authentication credential. \
             See https://developers.google.com/identity/sign-in/web/devconsole-project.",
        );
    };
    let allowed = !inner.denied.contains(&caller) && inner.policies.contains_key(resource);
    let denied = |perm: String| {
        google_error(
            StatusCode::FORBIDDEN,
            "PERMISSION_DENIED",
            format!(
                "Permission '{perm}' denied on resource '//cloudresourcemanager.googleapis.com/{resource}' \
                 (or it may not exist)."
            ),
        )
    };
    let body: serde_json::Value = if body.iter().all(u8::is_ascii_whitespace) {
        json!({})
    } else {
        match serde_json::from_slice(body) {
            Ok(v) => v,
            Err(e) => return invalid_argument(format!("Invalid JSON payload received. {e}")),
        }
    };
    match method {
        "getIamPolicy" => {
            if !allowed {
                return denied(permission("getIamPolicy"));
            }
            get_policy(&mut inner, resource, &body)
        }
        "setIamPolicy" => {
            if !allowed {
                return denied(permission("setIamPolicy"));
            }
            set_policy(&mut inner, resource, body)
        }
        "testIamPermissions" => {
            let asked: Vec<String> = body
                .get("permissions")
                .and_then(|p| serde_json::from_value(p.clone()).ok())
                .unwrap_or_default();
            let held: Vec<&String> = if allowed {
                let known = [
                    permission("getIamPolicy"),
                    permission("setIamPolicy"),
                    permission("get"),
                ];
                asked.iter().filter(|p| known.contains(p)).collect()
            } else {
                Vec::new()
            };
            if held.is_empty() {
                Json(json!({})).into_response()
            } else {
                Json(json!({ "permissions": held })).into_response()
            }
        }
        _ => not_found(),
    }
}

fn not_found() -> Response {
    google_error(
        StatusCode::NOT_FOUND,
        "NOT_FOUND",
        "The requested URL was not found on this server.",
    )
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GetRequest {
    #[serde(default)]
    options: Option<GetOptions>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct GetOptions {
    #[serde(default)]
    requested_policy_version: i32,
}

fn get_policy(inner: &mut Inner, resource: &str, body: &serde_json::Value) -> Response {
    let req: GetRequest = match serde_json::from_value(body.clone()) {
        Ok(r) => r,
        Err(e) => return invalid_argument(format!("Invalid JSON payload received. {e}")),
    };
    let requested = req.options.map_or(0, |o| o.requested_policy_version);
    if ![0, 1, 3].contains(&requested) {
        return invalid_argument(format!(
            "Invalid requested policy version {requested}: valid values are 0, 1 and 3."
        ));
    }
    let policy = inner
        .policies
        .get(resource)
        .expect("checked by caller")
        .clone();
    // Resource Manager refuses (rather than downgrades) a read that would hide conditions.
    if policy.has_conditions() && requested < 3 {
        return invalid_argument(format!(
            "Requested policy version ({}) cannot be less than the existing policy version (3). \
             For more information, please refer to https://cloud.google.com/iam/docs/policies#versions.",
            requested.max(1)
        ));
    }
    inner.stats.gets += 1;
    if let Some(edit) = inner.after_get.remove(resource) {
        let etag = inner.new_etag();
        let stored = inner.policies.get_mut(resource).expect("exists");
        edit(stored);
        stored.version = stored.effective_version();
        stored.etag = etag;
    }
    Json(policy).into_response()
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct SetRequest {
    policy: Policy,
    #[serde(default)]
    update_mask: Option<String>,
}

fn set_policy(inner: &mut Inner, resource: &str, body: serde_json::Value) -> Response {
    let req: SetRequest = match serde_json::from_value(body) {
        Ok(r) => r,
        Err(e) => return invalid_argument(format!("Invalid JSON payload received. {e}")),
    };
    let mask: Vec<String> = req
        .update_mask
        .as_deref()
        .unwrap_or("bindings,etag")
        .split(',')
        .map(|p| p.trim().to_owned())
        .collect();
    if let Some(bad) = mask
        .iter()
        .find(|p| !["bindings", "etag", "auditConfigs"].contains(&p.as_str()))
    {
        return invalid_argument(format!("Invalid update mask path: {bad}"));
    }
    let new = req.policy;
    if let Err(why) = policy::validate(&new, inner.member_limit) {
        return invalid_argument(why);
    }
    let current = inner.policies.get(resource).expect("checked by caller");
    if !new.etag.is_empty() {
        if new.etag != current.etag {
            inner.stats.conflicts += 1;
            return google_error(
                StatusCode::CONFLICT,
                "ABORTED",
                format!(
                    "There were concurrent policy changes. Please retry the whole read-modify-write \
                     with exponential backoff. The request's ETag '{}' did not match the current \
                     policy's ETag '{}'.",
                    new.etag, current.etag
                ),
            );
        }
        if new.version.max(1) < current.effective_version() {
            return invalid_argument(format!(
                "Specified policy version ({}) cannot be less than the existing policy version ({}). \
                 For more information, please refer to https://cloud.google.com/iam/docs/policies#versions.",
                new.version.max(1),
                current.effective_version()
            ));
        }
    }
    // Without an etag the write overwrites whatever is there (as documented).
    let mut stored = current.clone();
    if mask.iter().any(|p| p == "bindings") {
        stored.bindings = new.bindings;
    }
    if mask.iter().any(|p| p == "auditConfigs") {
        stored.audit_configs = new.audit_configs;
    }
    stored.version = stored.effective_version();
    stored.etag = inner.new_etag();
    inner.stats.sets += 1;
    inner.policies.insert(resource.into(), stored.clone());
    Json(stored).into_response()
}
