//! What the gateway needs to reach a grant's target as the grant itself, for
//! kinds whose protocol the gateway speaks (it injects the credential, so the
//! person never holds it).

/// Kinds whose protocol the gateway speaks; any other kind needs an
/// entitlement `target = "host:port"` (a counted byte relay).
pub const SPEAKS: &[&str] = &[crate::postgres::config::KIND];

/// Whether the gateway speaks kind `kind`'s protocol.
pub fn speaks(kind: &str) -> bool {
    SPEAKS.contains(&kind)
}

/// How the gateway logs in to the target for one grant.
#[derive(Clone)]
pub enum Upstream {
    /// PostgreSQL: a login as the grant's role.
    Postgres(PgLogin),
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
