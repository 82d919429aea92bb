//! Logging in to a gateway target as a grant: an SSH client that accepts
//! only host keys in the provider's `known_hosts` and authenticates with the
//! session's certificate. Shared by the gateway (which then opens channels)
//! and `airlock doctor` (which only checks that the login works).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use russh::client;
use russh::keys::{Certificate, PrivateKey, PublicKeyOrCertificate};

use crate::gateway::SshLogin;

/// How long the target may take to answer and to accept the certificate.
pub const LOGIN_TIMEOUT: Duration = Duration::from_secs(15);
/// Keepalives, so a dead target is noticed.
const KEEPALIVE: Duration = Duration::from_secs(30);

/// Why the gateway could not log in; each message says what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LoginError {
    /// TCP or the SSH handshake failed, or timed out.
    #[error("{0}")]
    Unreachable(String),
    /// The host key is unknown or differs from `known_hosts`.
    #[error("{0}")]
    HostKey(String),
    /// The target refused the certificate for that login name.
    #[error("{0}")]
    Refused(String),
    /// The session's key or certificate could not be read (a server bug).
    #[error("the gateway's session key is unusable: {0} (a server bug, please report it)")]
    Key(String),
}

/// A logged-in connection to the target.
pub type Connection = client::Handle<Back>;

/// Connects to the login's target and logs in as `user`.
pub async fn login(l: &SshLogin, user: &str) -> Result<Connection, LoginError> {
    let key =
        PrivateKey::from_openssh(l.key.as_str()).map_err(|e| LoginError::Key(e.to_string()))?;
    let certificate =
        Certificate::from_openssh(&l.certificate).map_err(|e| LoginError::Key(e.to_string()))?;
    let addr = format!("{}:{}", l.host, l.port);
    let config = Arc::new(client::Config {
        // The grant, not idleness, bounds a session.
        inactivity_timeout: None,
        keepalive_interval: Some(KEEPALIVE),
        nodelay: true,
        ..Default::default()
    });
    let back = Back {
        host: l.host.clone(),
        port: l.port,
        known_hosts: l.known_hosts.clone(),
        refusal: Arc::new(Mutex::new(None)),
    };
    let refusal = back.refusal.clone();
    let connected = tokio::time::timeout(
        LOGIN_TIMEOUT,
        client::connect(config, (l.host.as_str(), l.port), back),
    )
    .await
    .map_err(|_| LoginError::Unreachable(format!("{addr} did not answer in time")))?;
    let mut h =
        connected.map_err(
            |e| match refusal.lock().unwrap_or_else(|p| p.into_inner()).take() {
                Some(why) => LoginError::HostKey(why),
                None => LoginError::Unreachable(format!("cannot reach {addr}: {e}")),
            },
        )?;
    let auth = tokio::time::timeout(
        LOGIN_TIMEOUT,
        h.authenticate_openssh_cert(user, Arc::new(key), certificate),
    )
    .await
    .map_err(|_| LoginError::Unreachable(format!("{addr} did not answer the login in time")))?
    .map_err(|e| LoginError::Unreachable(format!("logging in to {addr} failed: {e}")))?;
    if !auth.success() {
        return Err(LoginError::Refused(format!(
            "{addr} refused the gateway's certificate for `{user}`: its sshd must trust this provider's CA (TrustedUserCAKeys, see `airlock ssh ca-key`) and accept `{user}` for these principals (AuthorizedPrincipalsFile)"
        )));
    }
    Ok(h)
}

/// The gateway as the target's client: accepts only host keys in `known_hosts`.
pub struct Back {
    host: String,
    port: u16,
    known_hosts: std::path::PathBuf,
    /// Why the host key was refused, for the error message.
    refusal: Arc<Mutex<Option<String>>>,
}

impl client::Handler for Back {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        key: &PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        let file = self.known_hosts.display();
        let (host, port) = (&self.host, self.port);
        let verdict = match key {
            PublicKeyOrCertificate::PublicKey { key, .. } => {
                match russh::keys::check_known_hosts_path(host, port, key, &self.known_hosts) {
                    Ok(true) => return Ok(true),
                    Ok(false) => format!(
                        "the host key of {host}:{port} is not in known_hosts {file}; add it (`ssh-keyscan -p {port} {host} >> {file}`) once you have checked it"
                    ),
                    Err(russh::keys::Error::KeyChanged { line }) => format!(
                        "the host key of {host}:{port} does not match line {line} of known_hosts {file}: the host was reinstalled, or someone is in the middle; the gateway will not connect"
                    ),
                    Err(e) => format!("cannot check the host key of {host}:{port} against {file}: {e}"),
                }
            }
            PublicKeyOrCertificate::Certificate(_) => format!(
                "{host}:{port} presented a host certificate; the gateway checks plain host keys from known_hosts {file} only"
            ),
        };
        tracing::warn!(target_host = %format!("{host}:{port}"), "gateway: {verdict}");
        *self.refusal.lock().unwrap_or_else(|p| p.into_inner()) = Some(verdict);
        Ok(false)
    }
}
