//! The service context: builds the store, providers, policy engine, keys and
//! notifiers from the configuration, and holds what this replica keeps.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use airlock_core::audit_chain::CheckpointSigner;
use airlock_core::policy::PolicyEngine;
use airlock_core::ProviderName;
use airlock_providers::{Provider, ValidatedConfig};
use airlock_store::{Store, StoreError, StoreResult};
use time::OffsetDateTime;
use tokio::sync::Notify;

use crate::error::{ServiceError, ServiceResult};
use crate::keys::{KeyError, ServerKeys};
use crate::metrics::Metrics;

/// Why the service could not start; each says which setting to fix.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The server keys cannot be read or written.
    #[error(transparent)]
    Keys(#[from] KeyError),
    /// The database cannot be opened or migrated.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A configuration section does not hold together (provider, tool, notifier, policy).
    #[error("{0}")]
    Setup(String),
    /// A notifier, secret or tool user cannot be set up.
    #[error(transparent)]
    Section(#[from] crate::SetupError),
}

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

/// The service context: configuration, store, providers, keys and the
/// state this replica keeps. Everything the application does starts here;
/// the HTTP layer adds only what HTTP needs (OIDC login, the router).
pub struct Service {
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
    /// Gateway sessions this replica holds.
    pub gateway: crate::gateway::Hub,
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
    /// This replica's copy of the locks in force.
    pub locks: crate::locks::LockCache,
    /// When tokens were last recorded as used.
    pub touched: crate::tokens::TouchLog,
    /// The audit chain verified so far by this replica (online verify resumes here).
    pub audit_verified: tokio::sync::Mutex<Option<airlock_core::audit_chain::ChainVerifier>>,
    /// Tree-head signer and Merkle proof cache of the audit log.
    pub tlog: crate::tlog::Tlog,
    /// Set once the replica drains (SIGTERM): loops finish their pass and stop.
    stopping: tokio::sync::watch::Sender<bool>,
}

impl Service {
    /// Opens the store (migrating it), loads keys and builds providers.
    pub fn new(opts: ServeOptions) -> Result<Arc<Service>, StartError> {
        let keys = ServerKeys::load_or_create(&opts.data_dir)?;
        let origin = opts.config.server.audit_origin();
        if !airlock_core::note::valid_name(&origin) {
            return Err(StartError::Setup(format!(
                "[server] audit_origin `{origin}` must be non-empty, without spaces or `+` (e.g. airlock.example.com/audit)"
            )));
        }
        let signer =
            CheckpointSigner::new(keys.signing.clone(), opts.config.server.checkpoint_every)
                .with_origin(&origin);
        let tlog = crate::tlog::Tlog::new(signer.clone());
        let store = airlock_store::open(&opts.database_url, Some(signer))?;
        let policy = PolicyEngine::new(&opts.config, opts.policy_text.as_deref())
            .map_err(|e| StartError::Setup(e.to_string()))?;
        let ctx = airlock_providers::ProviderContext {
            config_dir: opts.config_dir.clone(),
            data_dir: opts.data_dir.clone(),
        };
        let providers = opts
            .config
            .build_providers(&ctx)
            .map_err(|e| StartError::Setup(e.to_string()))?;
        let fault = match std::env::var("AIRLOCK_FAULT").ok().as_deref() {
            Some("pause-after-provider-apply") => Some(Fault::PauseAfterProviderApply),
            _ => None,
        };
        let proxy = crate::proxy::Hub::new(&opts.config)?;
        let notifiers = crate::notify::build(&opts.config, &opts.config_dir)?;
        let slack = crate::notify::slack::api::Slack::from_config(&opts.config, &opts.config_dir)?
            .map(Arc::new);
        let services = std::sync::RwLock::new(Arc::new(opts.config.services.clone()));
        if !opts.config.tools.is_empty() {
            crate::proxy::executor::harden_process();
            crate::proxy::executor::close_inherited_descriptors();
        }
        Ok(Arc::new(Service {
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
            gateway: Default::default(),
            config_dir: opts.config_dir,
            notifiers,
            audit_tick: tokio::sync::watch::Sender::new(0),
            services,
            slack,
            locks: Default::default(),
            touched: Default::default(),
            audit_verified: Default::default(),
            tlog,
            stopping: tokio::sync::watch::Sender::new(false),
        }))
    }

    /// Starts draining: background loops finish the pass they are in and stop
    /// taking new work, so nothing is left leased to this replica.
    pub fn stop(&self) {
        self.stopping.send_replace(true);
        self.wake.notify_waiters();
    }

    /// Whether [`stop`](Self::stop) was called.
    pub fn is_stopping(&self) -> bool {
        *self.stopping.borrow()
    }

    /// Resolves once [`stop`](Self::stop) is called.
    pub async fn stopped(&self) {
        let mut rx = self.stopping.subscribe();
        // The sender lives as long as `self`, so waiting cannot fail.
        let _ = rx.wait_for(|s| *s).await;
    }

    /// The current time; read here at the edge and passed down.
    pub fn now(&self) -> OffsetDateTime {
        OffsetDateTime::now_utc()
    }

    /// Runs a blocking store call off the async threads, then wakes the
    /// notifiers (the call may have appended audit events).
    pub async fn db<T, F>(self: &Arc<Self>, f: F) -> ServiceResult<T>
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
    pub async fn db_untracked<T, F>(self: &Arc<Self>, f: F) -> ServiceResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&dyn Store) -> StoreResult<T> + Send + 'static,
    {
        let app = self.clone();
        match tokio::task::spawn_blocking(move || f(app.store.as_ref())).await {
            Ok(r) => r.map_err(ServiceError::from),
            Err(e) => Err(ServiceError::internal(e)),
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
    pub fn provider(&self, name: &ProviderName) -> ServiceResult<Arc<dyn Provider>> {
        self.providers
            .get(name)
            .cloned()
            .ok_or_else(|| ServiceError::internal(format!("provider {name} is not configured")))
    }
}

/// Says at start-up which providers answer, so a typo in a URL or key path
/// shows in the log before the first request does.
pub async fn check_providers(app: Arc<Service>) {
    for (name, provider) in &app.providers {
        match provider.check().await {
            Ok(()) => tracing::info!(provider = %name, kind = provider.kind(), "provider ready"),
            Err(e) => tracing::warn!(provider = %name, kind = provider.kind(), error = %e,
                "provider check failed; requests for its entitlements will be refused until it answers"),
        }
    }
}
