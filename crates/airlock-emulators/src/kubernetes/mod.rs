//! A local emulation of the Kubernetes API server's RBAC binding endpoints
//! (`rbac.authorization.k8s.io/v1` RoleBindings and ClusterRoleBindings), for
//! tests of the `kubernetes` provider. Clients talk to it over real HTTP with a
//! real kubeconfig; only the server URL differs from a cluster.
//!
//! Emulated as the API server does them: create (201, 409 AlreadyExists, 404
//! for a missing namespace, 422 Invalid with causes), get (404), list in one
//! or all namespaces with `labelSelector` / `fieldSelector` (metadata.name,
//! metadata.namespace) / `limit` + `continue`, update (optimistic concurrency
//! on `resourceVersion`, uid preconditions, create-on-update, immutable
//! `roleRef`, no-op writes keep their version), delete (Success `Status`,
//! preconditions), `dryRun=All`, bearer-token authentication (401) and the RBAC
//! authorizer's 403 for a read-only identity, one global `resourceVersion`.
//! Not emulated: Roles/ClusterRoles themselves, PATCH, watch, deletecollection,
//! the privilege-escalation check on bind, list snapshots at an old version.

mod api;
mod names;
mod object;
mod selector;
mod status;
mod store;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use rand::Rng;
use serde_json::Value;
use tokio::sync::oneshot;

pub use api::Identity;
pub use object::Resource;
pub use selector::Selector;
pub use status::ApiError;
pub use store::DEFAULT_NAMESPACES;

/// User name the admin token authenticates as (what a 403 message would name).
pub const ADMIN_USER: &str = "system:serviceaccount:airlock:airlock";
/// User name of the read-only token.
pub const READ_ONLY_USER: &str = "system:serviceaccount:airlock:viewer";

/// State shared by the HTTP handlers and the test-side [`Handle`].
pub struct Shared {
    store: Mutex<store::Store>,
    identities: BTreeMap<String, Identity>,
    outage: Mutex<Option<u16>>,
    requests: Mutex<Vec<String>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panicking test thread must not wedge the emulator for the others.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Shared {
    fn store(&self) -> MutexGuard<'_, store::Store> {
        lock(&self.store)
    }

    fn identity(&self, token: &str) -> Option<Identity> {
        self.identities.get(token).cloned()
    }

    fn outage(&self) -> Option<u16> {
        *lock(&self.outage)
    }

    fn record(&self, line: String) {
        lock(&self.requests).push(line);
    }
}

/// A running emulator; stops when dropped.
pub struct Handle {
    /// Base URL, `http://127.0.0.1:PORT`.
    pub url: String,
    /// Bearer token with full access to the emulated resources.
    pub token: String,
    /// Bearer token that may only get and list (create/update/delete answer 403).
    pub read_only_token: String,
    shared: Arc<Shared>,
    shutdown: Option<oneshot::Sender<()>>,
}

fn random_token() -> String {
    let bytes: [u8; 24] = rand::thread_rng().gen();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Starts an emulator on a free loopback port (inside a tokio runtime).
pub async fn start() -> Handle {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind 127.0.0.1:0 for the Kubernetes emulator");
    let addr = listener
        .local_addr()
        .expect("the emulator's listener has an address");
    let token = random_token();
    let read_only_token = random_token();
    let mut identities = BTreeMap::new();
    identities.insert(
        token.clone(),
        Identity {
            user: ADMIN_USER.into(),
            can_write: true,
        },
    );
    identities.insert(
        read_only_token.clone(),
        Identity {
            user: READ_ONLY_USER.into(),
            can_write: false,
        },
    );
    let shared = Arc::new(Shared {
        store: Mutex::new(store::Store::default()),
        identities,
        outage: Mutex::new(None),
        requests: Mutex::new(Vec::new()),
    });
    let app = api::router(shared.clone());
    let (tx, rx) = oneshot::channel::<()>();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = rx.await;
            })
            .await;
    });
    Handle {
        url: format!("http://{addr}"),
        token,
        read_only_token,
        shared,
        shutdown: Some(tx),
    }
}

impl Handle {
    /// A kubeconfig (YAML) that points at this emulator and authenticates with `token`.
    pub fn kubeconfig(&self, token: &str) -> String {
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: emulator\n  cluster:\n    server: {url}\n\
             contexts:\n- name: emulator\n  context:\n    cluster: emulator\n    user: airlock\n    namespace: default\n\
             current-context: emulator\nusers:\n- name: airlock\n  user:\n    token: {token}\n",
            url = self.url
        )
    }

    /// Adds a namespace; creates in namespaces that do not exist answer 404.
    pub fn add_namespace(&self, ns: &str) {
        self.shared.store().add_namespace(ns);
    }

    /// Creates an object as a POST would (same validation), bypassing HTTP.
    /// `ns` is the namespace for RoleBindings, `None` for ClusterRoleBindings.
    pub fn create(
        &self,
        resource: Resource,
        ns: Option<&str>,
        object: Value,
    ) -> Result<Value, ApiError> {
        let body = serde_json::to_vec(&object).unwrap_or_default();
        let b = object::decode(resource, &body)?;
        let created = self.shared.store().create(resource, ns, b, false)?;
        Ok(serde_json::to_value(created).unwrap_or(Value::Null))
    }

    /// One stored object, as a GET would return it.
    pub fn get(&self, resource: Resource, ns: Option<&str>, name: &str) -> Option<Value> {
        let b = self.shared.store().get(resource, ns, name).ok()?;
        serde_json::to_value(b).ok()
    }

    /// Every stored object of `resource`, in key order.
    pub fn all(&self, resource: Resource) -> Vec<Value> {
        self.shared
            .store()
            .all(resource)
            .into_iter()
            .filter_map(|b| serde_json::to_value(b).ok())
            .collect()
    }

    /// From now on answer every request with this error status (429, 500,
    /// 503, 504), or serve normally again with `None`.
    pub fn set_outage(&self, code: Option<u16>) {
        *lock(&self.shared.outage) = code;
    }

    /// Every request received so far, as `METHOD /path?query`.
    pub fn requests(&self) -> Vec<String> {
        lock(&self.shared.requests).clone()
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}
