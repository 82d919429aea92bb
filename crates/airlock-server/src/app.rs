//! The HTTP state and the listener: the service context plus what only HTTP
//! needs (the OIDC login flows), the router, and the background loops started
//! beside it.

use std::ops::Deref;
use std::sync::Arc;

use airlock_service::{Service, StartError};
use tokio::net::TcpListener;

pub use airlock_service::{Fault, ServeOptions};

/// Shared HTTP state: the application plus the web login flows.
pub struct App {
    /// The application (store, providers, keys, notifiers, this replica's state).
    pub svc: Arc<Service>,
    /// `[auth.oidc]` login, when configured.
    pub oidc: Option<Arc<crate::oidc::Oidc>>,
}

/// Handlers read configuration and call the store through the service context.
impl Deref for App {
    type Target = Service;
    fn deref(&self) -> &Service {
        &self.svc
    }
}

impl App {
    /// Builds the application and the login flows from the options.
    pub fn new(opts: ServeOptions) -> Result<Arc<App>, StartError> {
        let oidc = crate::oidc::Oidc::build(&opts.config, &opts.config_dir)?;
        let svc = Service::new(opts)?;
        Ok(Arc::new(App { svc, oidc }))
    }
}

/// Serves the API on `listener` (and runs background loops if configured)
/// until `shutdown` resolves; then drains: stops accepting, lets open
/// requests and streams finish and the reconciler and proxy loops end their
/// pass, and returns. Bound the wait from outside (`[server] shutdown_grace`).
pub async fn run(
    app: Arc<App>,
    listener: TcpListener,
    reconcile: bool,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    // The loops that lease work: a drain waits for them to hand it back.
    let mut leasing = tokio::task::JoinSet::new();
    if reconcile {
        tokio::spawn(airlock_service::context::check_providers(app.svc.clone()));
        leasing.spawn(airlock_service::reconciler::run(app.svc.clone()));
        leasing.spawn(airlock_service::proxy::background::run(app.svc.clone()));
        tokio::spawn(airlock_service::reconciler::run_drift(app.svc.clone()));
        tokio::spawn(airlock_service::audit::watch(app.svc.clone()));
        airlock_service::notify::spawn_all(&app.svc);
    }
    // Every replica holds gateway sessions, and ends those of replicas that died.
    leasing.spawn(airlock_service::gateway::watch(app.svc.clone()));
    // Every replica signs; the store makes a second signature of one size a no-op.
    tokio::spawn(airlock_service::tlog::run(app.svc.clone()));
    // Routing needs the catalog before the first request is served.
    airlock_service::catalog::start(app.svc.clone()).await;
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
    let svc = app.svc.clone();
    let router = crate::api::router(app);
    // No Nagle delay: run output streams in small frames, and a reused
    // connection must not wait for a delayed ACK between them.
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        let _ = tcp.set_nodelay(true);
    });
    // The peer address limits unauthenticated device-login starts per client.
    let served = axum::serve(
        listener,
        router.into_make_service_with_connect_info::<std::net::SocketAddr>(),
    )
    .with_graceful_shutdown({
        let svc = svc.clone();
        async move {
            shutdown.await;
            tracing::info!("draining: no new connections; finishing open requests and passes");
            svc.stop();
        }
    })
    .await;
    // Also when the listener failed: nothing may stay leased to us.
    svc.stop();
    while leasing.join_next().await.is_some() {}
    tracing::info!("drained");
    served
}
