//! What the gateway needs to reach a grant's target as the grant itself, for
//! kinds whose protocol the gateway speaks (it injects the credential, so the
//! person never holds it).

/// Kinds whose protocol the gateway speaks (ssh: for entitlements with
/// `target_host`); any other kind needs an entitlement `target = "host:port"`
/// (a counted byte relay).
pub const SPEAKS: &[&str] = &[crate::postgres::config::KIND, crate::ssh::config::KIND];

/// Whether the gateway speaks kind `kind`'s protocol.
pub fn speaks(kind: &str) -> bool {
    SPEAKS.contains(&kind)
}

/// How the gateway logs in to the target for one grant.
#[derive(Clone)]
pub enum Upstream {
    /// PostgreSQL: a login as the grant's role.
    Postgres(PgLogin),
    /// SSH: a certificate the provider's CA signed for this session's own key.
    Ssh(SshLogin),
}

/// An SSH login for one session: a key made for it and a certificate for
/// that key, valid until the grant's `not_after`, that never leave the server.
#[derive(Clone)]
pub struct SshLogin {
    /// sshd host (as airlock reaches it).
    pub host: String,
    /// sshd port.
    pub port: u16,
    /// Login names the certificate is good for (the entitlement's principals).
    pub principals: Vec<String>,
    /// The `known_hosts` file the target's host key must be in.
    pub known_hosts: std::path::PathBuf,
    /// The session's private key (OpenSSH PEM).
    pub key: zeroize::Zeroizing<String>,
    /// Its certificate (one OpenSSH line).
    pub certificate: String,
    /// The gateway's own host key (OpenSSH PEM), shown to the person's `ssh`.
    pub host_key: zeroize::Zeroizing<String>,
}

impl std::fmt::Debug for SshLogin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SshLogin")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("principals", &self.principals)
            .field("known_hosts", &self.known_hosts)
            .finish_non_exhaustive()
    }
}

/// A PostgreSQL login for one grant.
#[derive(Clone)]
pub struct PgLogin {
    /// Server host (as airlock reaches it, not `public_host`).
    pub host: String,
    /// Server port.
    pub port: u16,
    /// Database when the client names none.
    pub database: String,
    /// The grant's login role.
    pub user: String,
    /// The grant's password (re-derived per session, never stored or logged).
    pub password: zeroize::Zeroizing<String>,
    /// `tls = "require"`: TLS to the server, its certificate verified.
    pub tls: Option<std::sync::Arc<rustls::ClientConfig>>,
}

impl std::fmt::Debug for PgLogin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgLogin")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("database", &self.database)
            .field("user", &self.user)
            .field("tls", &self.tls.is_some())
            .finish_non_exhaustive()
    }
}
