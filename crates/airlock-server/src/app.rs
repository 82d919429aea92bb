//! Wiring: builds the store, providers, policy engine and keys from the
//! configuration, and runs the HTTP server and background loops.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use airlock_core::audit_chain::CheckpointSigner;
use airlock_core::policy::PolicyEngine;
use airlock_core::ProviderName;
use airlock_providers::{Provider, ValidatedConfig};
use airlock_store::{Store, StoreResult};
use time::OffsetDateTime;
use tokio::net::TcpListener;
use tokio::sync::Notify;

use crate::keys::ServerKeys;
use crate::metrics::Metrics;
use crate::problem::ApiError;

/// Everything `airlock serve` needs, resolved by the binary.
pub struct ServeOptions {
    /// The configuration, provider keys checked by their kinds.
    pub config: ValidatedConfig,
    /// Operator Cedar policies (file contents).
    pub policy_text: Option<String>,
    /// Keys live here.
    pub data_dir: PathBuf,
    /// The configuration file's folder (provider files such as `ca_key` are relative to it).
    pub config_dir: PathBuf,
    /// `sqlite://…` or `postgres://…`.
    pub database_url: String,
    /// SHA-256 hashes of admin tokens defined at start-up (bootstrap, dev).
    pub admin_token_hashes: Vec<[u8; 32]>,
    /// Stable name of this replica (reclaims its own leases after a restart).
    pub replica_id: String,
}

/// Fault injection for crash tests (`AIRLOCK_FAULT`); never set in production.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Sleep 30 s after a provider apply succeeded, before recording it, so a
    /// test can `kill -9` the server in exactly that window.
    PauseAfterProviderApply,
}

/// Shared server state.
pub struct App {
    pub config: ValidatedConfig,
    pub policy: PolicyEngine,
    pub store: Arc<dyn Store>,
    pub providers: BTreeMap<ProviderName, Arc<dyn Provider>>,
    pub keys: ServerKeys,
    pub admin_token_hashes: Vec<[u8; 32]>,
    pub metrics: Metrics,
    /// Wakes the reconciler when new work was recorded.
    pub wake: Notify,
    pub replica_id: String,
    pub fault: Option<Fault>,
    pub data_dir: PathBuf,
    /// Tool-proxy runs executing in this process.
    pub proxy: crate::proxy::Hub,
    /// The configuration file's folder (secret files are relative to it).
    pub config_dir: PathBuf,
    /// Notification sinks following the audit chain.
    pub notifiers: Vec<Arc<dyn crate::notify::Notifier>>,
    /// Bumped after store calls, so notifiers look for new audit events at once.
    pub audit_tick: tokio::sync::watch::Sender<u64>,
    /// The service catalog in force (the file's, or the last good `catalog_url` copy).
    pub services: std::sync::RwLock<Arc<airlock_core::service::ServiceCatalog>>,
    /// Slack Web API client and signing secret (`[notify.slack]`), for interaction callbacks.
    pub slack: Option<Arc<crate::notify::slack::api::Slack>>,
    /// `[auth.oidc]` login, when configured.
    pub oidc: Option<Arc<crate::oidc::Oidc>>,
    /// This replica's copy of the locks in force.
    pub locks: crate::locks::LockCache,
    /// When tokens were last recorded as used.
    pub touched: crate::tokens::TouchLog,
    /// The audit chain verified so far by this replica (online verify resumes here).
    pub audit_verified: tokio::sync::Mutex<Option<airlock_core::audit_chain::ChainVerifier>>,
    /// Tree-head signer and Merkle proof cache of the audit log.
    pub tlog: crate::tlog::Tlog,
}

impl App {
    /// Opens the store (migrating it), loads keys and builds providers.
    pub fn new(opts: ServeOptions) -> Result<Arc<App>, String> {
        let keys = ServerKeys::load_or_create(&opts.data_dir).map_err(|e| e.to_string())?;
        let origin = opts.config.server.audit_origin();
        if !airlock_core::note::valid_name(&origin) {
            return Err(format!(
                "[server] audit_origin `{origin}` must be non-empty, without spaces or `+` (e.g. airlock.example.com/audit)"
            ));
        }
        let signer =
            CheckpointSigner::new(keys.signing.clone(), opts.config.server.checkpoint_every)
                .with_origin(&origin);
        let tlog = crate::tlog::Tlog::new(signer.clone());
        let store =
            airlock_store::open(&opts.database_url, Some(signer)).map_err(|e| e.to_string())?;
        let policy = PolicyEngine::new(&opts.config, opts.policy_text.as_deref())
            .map_err(|e| e.to_string())?;
        let ctx = airlock_providers::ProviderContext {
            config_dir: opts.config_dir.clone(),
            data_dir: opts.data_dir.clone(),
        };
        let providers = opts
            .config
            .build_providers(&ctx)
            .map_err(|e| e.to_string())?;
        let fault = match std::env::var("AIRLOCK_FAULT").ok().as_deref() {
            Some("pause-after-provider-apply") => Some(Fault::PauseAfterProviderApply),
            _ => None,
        };
        let proxy = crate::proxy::Hub::new(&opts.config)?;
        let notifiers = crate::notify::build(&opts.config, &opts.config_dir)?;
        let slack = crate::notify::slack::api::Slack::from_config(&opts.config, &opts.config_dir)?
            .map(Arc::new);
        let oidc = crate::oidc::Oidc::build(&opts.config, &opts.config_dir)?;
        let services = std::sync::RwLock::new(Arc::new(opts.config.services.clone()));
        if !opts.config.tools.is_empty() {
            crate::proxy::executor::harden_process();
            crate::proxy::executor::close_inherited_descriptors();
        }
        Ok(Arc::new(App {
            config: opts.config,
            policy,
            store,
            providers,
            keys,
            admin_token_hashes: opts.admin_token_hashes,
            metrics: Metrics::default(),
            wake: Notify::new(),
            replica_id: opts.replica_id,
            fault,
            data_dir: opts.data_dir,
            proxy,
            config_dir: opts.config_dir,
            notifiers,
            audit_tick: tokio::sync::watch::Sender::new(0),
            services,
            slack,
            oidc,
            locks: Default::default(),
            touched: Default::default(),
            audit_verified: Default::default(),
            tlog,
        }))
    }

    /// The current time; read here at the edge and passed down.
    pub fn now(&self) -> OffsetDateTime {
        OffsetDateTime::now_utc()
    }

    /// Runs a blocking store call off the async threads, then wakes the
    /// notifiers (the call may have appended audit events).
    pub async fn db<T, F>(self: &Arc<Self>, f: F) -> Result<T, ApiError>
    where
        T: Send + 'static,
        F: FnOnce(&dyn Store) -> StoreResult<T> + Send + 'static,
    {
        let out = self.db_untracked(f).await;
        if !self.notifiers.is_empty() {
            self.audit_tick.send_modify(|n| *n = n.wrapping_add(1));
        }
        out
    }

    /// [`db`](Self::db) for calls that never append audit events (the
    /// notifiers' own bookkeeping and reads): a sink must not wake itself.
    pub async fn db_untracked<T, F>(self: &Arc<Self>, f: F) -> Result<T, ApiError>
    where
        T: Send + 'static,
        F: FnOnce(&dyn Store) -> StoreResult<T> + Send + 'static,
    {
        let app = self.clone();
        match tokio::task::spawn_blocking(move || f(app.store.as_ref())).await {
            Ok(r) => r.map_err(ApiError::from),
            Err(e) => Err(ApiError::internal(e)),
        }
    }

    /// The service catalog in force now.
    pub fn service_catalog(&self) -> Arc<airlock_core::service::ServiceCatalog> {
        self.services
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The approval rule that applies: the catalog's, with the service's
    /// owners as reviewers when the rule names none.
    pub fn approval_rule(
        &self,
        rule: &airlock_core::approval::ApprovalRule,
        service: Option<&airlock_core::ServiceName>,
    ) -> airlock_core::approval::ApprovalRule {
        match service {
            None => rule.clone(),
            Some(_) => self.service_catalog().effective_rule(rule, service),
        }
    }

    /// The provider an entitlement uses.
    pub fn provider(&self, name: &ProviderName) -> Result<Arc<dyn Provider>, ApiError> {
        self.providers
            .get(name)
            .cloned()
            .ok_or_else(|| ApiError::internal(format!("provider {name} is not configured")))
    }
}

/// Says at start-up which providers answer, so a typo in a URL or key path
/// shows in the log before the first request does.
async fn check_providers(app: Arc<App>) {
    for (name, provider) in &app.providers {
        match provider.check().await {
            Ok(()) => tracing::info!(provider = %name, kind = provider.kind(), "provider ready"),
            Err(e) => tracing::warn!(provider = %name, kind = provider.kind(), error = %e,
                "provider check failed; requests for its entitlements will be refused until it answers"),
        }
    }
}

/// Serves the API on `listener` (and runs background loops if configured)
/// until `shutdown` resolves.
pub async fn run(
    app: Arc<App>,
    listener: TcpListener,
    reconcile: bool,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    if reconcile {
        tokio::spawn(check_providers(app.clone()));
        tokio::spawn(crate::reconciler::run(app.clone()));
        tokio::spawn(crate::proxy::background::run(app.clone()));
        tokio::spawn(crate::reconciler::run_drift(app.clone()));
        crate::notify::spawn_all(&app);
    }
    // Every replica signs; the store makes a second signature of one size a no-op.
    tokio::spawn(crate::tlog::run(app.clone()));
    // Routing needs the catalog before the first request is served.
    crate::catalog::start(app.clone()).await;
    if let Some(addr) = app.config.server.metrics_listen.clone() {
        // A separate address, e.g. loopback for a local Prometheus agent only.
        let metrics = TcpListener::bind(&addr).await.map_err(|e| {
            std::io::Error::new(
                e.kind(),
                format!("cannot listen on metrics_listen {addr}: {e}"),
            )
        })?;
        tracing::info!(addr = %addr, "metrics served on their own listener");
        let router = crate::api::metrics_router(app.clone());
        tokio::spawn(async move {
            if let Err(e) = axum::serve(metrics, router).await {
                tracing::error!(error = %e, "the metrics listener stopped");
            }
        });
    }
    let router = crate::api::router(app);
    // No Nagle delay: run output streams in small frames, and a reused
    // connection must not wait for a delayed ACK between them.
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        let _ = tcp.set_nodelay(true);
    });
    // The peer address limits unauthenticated device-login starts per client.
    axum::serve(
        listener,
        router.into_make_service_with_connect_info::<std::net::SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await
}
