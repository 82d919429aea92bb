//! Reaching the API server: the client configuration from a kubeconfig file
//! or the pod's service account (checked when the provider is built, so a bad
//! file fails at start-up), the client made on first use, and how kube's
//! errors map onto `Unreachable` (retry) and `Refused` (fix something).

use std::path::Path;
use std::time::Duration;

use kube::config::Kubeconfig;
use kube::{Client, Config};
use tokio::sync::OnceCell;

use crate::{BuildError, ProviderError};

/// Connect timeout: a dead API server should fail a call quickly.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Read/write timeout for one request (binding calls are small).
pub const IO_TIMEOUT: Duration = Duration::from_secs(30);

/// The longest API message kept in an error (HTML from a proxy can be huge).
const MAX_MESSAGE: usize = 300;

/// A client configuration and the client built from it on first use (the
/// client spawns a task, so it needs the runtime that `build` may not have).
pub struct Connection {
    config: Config,
    client: OnceCell<Client>,
}

impl Connection {
    /// Loads `kubeconfig` (already resolved against the config folder), or
    /// the in-cluster service account when `None`.
    pub fn load(provider: &str, kubeconfig: Option<&Path>) -> Result<Connection, BuildError> {
        let mut config = match kubeconfig {
            Some(path) => from_file(provider, path)?,
            None => Config::incluster().map_err(|e| BuildError::Setup {
                provider: provider.to_owned(),
                detail: format!(
                    "no `kubeconfig` is set, so airlock expects to run in a \
                     Kubernetes pod with a service account, but {e}: set `kubeconfig = \"FILE\"` \
                     (relative to the configuration file) or run airlock in the cluster"
                ),
            })?,
        };
        config.connect_timeout = Some(CONNECT_TIMEOUT);
        config.read_timeout = Some(IO_TIMEOUT);
        config.write_timeout = Some(IO_TIMEOUT);
        // The reconciler retries with its own backoff; kube's built-in retry
        // of 429/503/504 would hold one call for minutes during an outage.
        config.default_retry = false;
        // Certificates, keys and token files are read here, so they fail at start-up too.
        kube::client::ClientBuilder::try_from(config.clone()).map_err(|e| BuildError::Setup {
            provider: provider.to_owned(),
            detail: format!("cannot set up the Kubernetes client: {e}"),
        })?;
        Ok(Connection {
            config,
            client: OnceCell::new(),
        })
    }

    /// The API server URL (for messages).
    pub fn server(&self) -> String {
        self.config.cluster_url.to_string()
    }

    /// The client, built on first use.
    pub async fn client(&self, provider: &str) -> Result<Client, ProviderError> {
        self.client
            .get_or_try_init(|| async {
                Client::try_from(self.config.clone()).map_err(|e| ProviderError::Refused {
                    provider: provider.to_owned(),
                    detail: format!("cannot set up the Kubernetes client: {e}"),
                })
            })
            .await
            .cloned()
    }
}

fn from_file(provider: &str, path: &Path) -> Result<Config, BuildError> {
    let shown = path.display();
    let kubeconfig = Kubeconfig::read_from(path).map_err(|e| {
        let why = match &e {
            kube::config::KubeconfigError::ReadConfig(io, _) => io.to_string(),
            // The file may hold a token: keep the YAML error's first line (line,
            // column, what is wrong), never the source excerpt or quoted values.
            other => redact_quoted(other.to_string().lines().next().unwrap_or_default()),
        };
        BuildError::File {
            provider: provider.to_owned(),
            detail: format!(
                "kubeconfig {shown} cannot be read: {why}: point `kubeconfig` at \
                 a kubeconfig file (relative to the configuration file)"
            ),
        }
    })?;
    Config::try_from(kubeconfig).map_err(|e| BuildError::File {
        provider: provider.to_owned(),
        detail: format!(
            "kubeconfig {shown} is not usable: {e}: it needs a \
             current-context whose cluster has a `server` URL and valid certificate data"
        ),
    })
}

/// Replaces text between double quotes or backticks with `…`.
fn redact_quoted(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut open: Option<char> = None;
    for c in s.chars() {
        match open {
            Some(q) if c == q => {
                out.push(c);
                open = None;
            }
            Some(_) => {}
            None => {
                out.push(c);
                if c == '"' || c == '`' {
                    open = Some(c);
                    out.push('…');
                }
            }
        }
    }
    out
}

/// Whether `e` is an API answer with this HTTP code (and reason, when given).
pub fn is_status(e: &kube::Error, code: u16, reason: Option<&str>) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == code && reason.is_none_or(|r| s.reason == r))
}

/// Maps a kube error to the provider error a caller acts on. `doing` says
/// what was attempted (`creating RoleBinding payments/airlock-…`).
pub fn classify(provider: &str, server: &str, doing: &str, e: kube::Error) -> ProviderError {
    let unreachable = |detail: String| ProviderError::Unreachable {
        provider: provider.to_owned(),
        detail,
    };
    let refused = |detail: String| ProviderError::Refused {
        provider: provider.to_owned(),
        detail,
    };
    match e {
        kube::Error::Api(s) => {
            let mut message: String = s.message.chars().take(MAX_MESSAGE).collect();
            if message.len() < s.message.len() {
                message.push('…');
            }
            let what = format!("{doing}: {message} (HTTP {} {})", s.code, s.reason);
            match s.code {
                401 => refused(format!(
                    "{doing}: the API server at {server} does not accept airlock's credentials \
                     (HTTP 401): renew the token or client certificate in the kubeconfig"
                )),
                403 => refused(format!(
                    "{what}: give airlock's identity the RBAC listed in docs/providers/kubernetes.md"
                )),
                404 if s.details.as_ref().is_some_and(|d| d.kind == "namespaces") => refused(
                    format!("{what}: create the namespace, or fix `namespace` in the entitlement"),
                ),
                408 | 429 => unreachable(what),
                500..=599 => unreachable(what),
                _ => refused(what),
            }
        }
        kube::Error::HyperError(_) | kube::Error::Service(_) | kube::Error::ReadEvents(_) => {
            unreachable(format!(
                "{doing}: cannot reach the API server at {server}: {}",
                chain(&e)
            ))
        }
        // Token refresh (exec plugins, token files) may recover on its own.
        kube::Error::Auth(_) => unreachable(format!("{doing}: {}", chain(&e))),
        other => refused(format!("{doing}: {}", chain(&other))),
    }
}

/// An error and its sources, one line.
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}
