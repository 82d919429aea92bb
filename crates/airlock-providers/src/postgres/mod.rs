//! PostgreSQL provider: a grant is a LOGIN role `<role_prefix><request id>`,
//! member of the entitlement role, with `VALID UNTIL not_after` as native expiry.
//! Text from outside airlock (entitlement roles, drift account names) reaches
//! SQL only as quoted by the server's `format('%I')` / `format('%L')`; what
//! airlock generates itself is checked to need no quoting (see `Sql`).
//!
//! One cached connection is shared by all calls. Every write is one simple-query
//! message (one implicit transaction), so concurrent calls can pipeline on it
//! without ever seeing each other's transaction state.

mod scram;

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use airlock_core::{ProviderName, RequestId};
use tokio::sync::Mutex;
use tokio_postgres::config::Host;
use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, NoTls, SimpleQueryMessage, Statement};

use crate::rfc3339_utc;
use crate::{
    BuildError, CatalogTarget, CredentialRequest, Finding, GrantSpec, ManagedAccount, Provider,
    ProviderError, StandingAccess,
};

pub mod config;
pub use config::{Config, Target, TlsMode};

/// Prefix of the roles airlock creates when `role_prefix` is not set.
pub const DEFAULT_ROLE_PREFIX: &str = "airlock_";
/// Per-grant `CONNECTION LIMIT` when `connection_limit` is not set.
pub const DEFAULT_CONNECTION_LIMIT: u32 = 10;
/// Socket connect timeout when the URL sets none, so a dead host fails fast.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// PostgreSQL truncates longer identifiers (NAMEDATALEN - 1).
const MAX_ROLE_NAME_LEN: usize = 63;

/// The server's quoting of a name, plus what removal must know about it. $1 name.
const DESCRIBE: &str = "\
SELECT pg_catalog.format('%I', $1::text), pg_catalog.format('%L', $1::text), \
       COALESCE((SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = $1::text), false), \
       $1::text = current_user::text";

/// Ends sessions of a role by oid (still visible after the role is dropped).
const TERMINATE_BY_OID: &str = "\
SELECT pg_catalog.count(pg_catalog.pg_terminate_backend(pid)) FROM pg_catalog.pg_stat_activity \
 WHERE usesysid = $1::text::oid";

/// Roles in airlock's namespace, except the one it connects as.
const LIST_MANAGED: &str = "\
SELECT rolname::text FROM pg_catalog.pg_roles \
 WHERE pg_catalog.starts_with(rolname::text, $1::text) AND rolname <> current_user ORDER BY rolname";

/// A name as SQL text: `ident` for identifier positions, `literal` for values.
struct Sql {
    ident: String,
    literal: String,
}

impl Sql {
    /// Quotes text airlock generated itself (account names, RFC 3339 times,
    /// SCRAM verifiers) whose characters need no escaping; `None` otherwise,
    /// and the caller asks the server to quote instead.
    fn generated(s: &str) -> Option<Sql> {
        let plain = !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_-+/=:$.".contains(&b));
        plain.then(|| Sql {
            ident: format!("\"{s}\""),
            literal: format!("'{s}'"),
        })
    }
}

/// `[providers.NAME] kind = "postgres"`.
pub struct PostgresProvider {
    name: ProviderName,
    pg: tokio_postgres::Config,
    connect_timeout: Duration,
    prefix: String,
    connection_limit: u32,
    public_host: String,
    public_port: u16,
    database: String,
    /// Where the gateway reaches the server (the URL's first TCP host).
    target: Option<(String, u16)>,
    /// `tls = "require"`: the verified client configuration.
    tls: Option<Arc<rustls::ClientConfig>>,
    conn: Mutex<Option<Arc<Conn>>>,
    /// Entitlement role -> identifier as quoted by the server (a handful of entries).
    role_idents: std::sync::Mutex<HashMap<String, String>>,
}

/// The cached connection with its prepared statements.
struct Conn {
    client: Client,
    describe: Statement,
    terminate_by_oid: Statement,
    list_managed: Statement,
}

/// A failure inside one attempt: the raw driver error (to decide on a retry)
/// or an already-classified one.
enum Failure {
    Pg(tokio_postgres::Error),
    Provider(ProviderError),
}

impl From<tokio_postgres::Error> for Failure {
    fn from(e: tokio_postgres::Error) -> Self {
        Failure::Pg(e)
    }
}

impl From<ProviderError> for Failure {
    fn from(e: ProviderError) -> Self {
        Failure::Provider(e)
    }
}

fn is(e: &tokio_postgres::Error, code: &SqlState) -> bool {
    e.code() == Some(code)
}

impl PostgresProvider {
    /// Parses the configuration; does not connect (the target may be down).
    /// A relative `tls_ca_file` is read from the working directory.
    pub fn new(name: ProviderName, config: &Config) -> Result<Self, BuildError> {
        Self::new_in(name, config, std::path::Path::new("."))
    }

    /// [`new`](Self::new), with a relative `tls_ca_file` read from `config_dir`.
    pub fn new_in(
        name: ProviderName,
        config: &Config,
        config_dir: &std::path::Path,
    ) -> Result<Self, BuildError> {
        config.validate().map_err(|e| BuildError::Config {
            provider: name.to_string(),
            detail: e.detail,
        })?;
        // The parse error never echoes the URL, which may hold a password.
        let mut pg: tokio_postgres::Config =
            config.url.parse().map_err(|e| BuildError::Config {
                provider: name.to_string(),
                detail: format!(
                    "`url` is not a PostgreSQL URL (postgres://user@host:5432/db): {e}"
                ),
            })?;
        let connect_timeout = match pg.get_connect_timeout() {
            Some(t) => *t,
            None => {
                pg.connect_timeout(DEFAULT_CONNECT_TIMEOUT);
                DEFAULT_CONNECT_TIMEOUT
            }
        };
        if pg.get_application_name().is_none() {
            pg.application_name(format!("airlock {name}"));
        }
        let url_host = pg.get_hosts().iter().find_map(|h| match h {
            Host::Tcp(h) => Some(h.clone()),
            #[cfg(unix)]
            Host::Unix(_) => None,
        });
        let public_host = config
            .public_host
            .clone()
            .or(url_host)
            .unwrap_or_else(|| "localhost".into());
        let public_port = config
            .public_port
            .or_else(|| pg.get_ports().first().copied())
            .unwrap_or(5432);
        let database = pg.get_dbname().unwrap_or("postgres").to_owned();
        let tls = match config.tls.unwrap_or_default() {
            TlsMode::Disable => None,
            TlsMode::Require => {
                pg.ssl_mode(tokio_postgres::config::SslMode::Require);
                let ca = config.tls_ca_file.as_ref().map(|f| config_dir.join(f));
                Some(crate::tls::client_config(ca.as_deref()).map_err(|detail| {
                    BuildError::Config {
                        provider: name.to_string(),
                        detail,
                    }
                })?)
            }
        };
        let target = pg.get_hosts().first().and_then(|h| match h {
            Host::Tcp(h) => Some((h.clone(), pg.get_ports().first().copied().unwrap_or(5432))),
            #[cfg(unix)]
            Host::Unix(_) => None,
        });
        Ok(PostgresProvider {
            name,
            pg,
            connect_timeout,
            prefix: config
                .role_prefix
                .clone()
                .unwrap_or_else(|| DEFAULT_ROLE_PREFIX.into()),
            connection_limit: config.connection_limit.unwrap_or(DEFAULT_CONNECTION_LIMIT),
            public_host,
            public_port,
            database,
            target,
            tls,
            conn: Mutex::new(None),
            role_idents: std::sync::Mutex::new(HashMap::new()),
        })
    }

    /// Connects with `tls` and drives the connection on its own task.
    async fn open<T>(&self, tls: T) -> Result<Client, ProviderError>
    where
        T: tokio_postgres::tls::MakeTlsConnect<tokio_postgres::Socket>,
        T::Stream: Send + 'static,
    {
        // connect_timeout bounds each socket attempt; this bounds the handshake too.
        let limit = self.connect_timeout + Duration::from_secs(2);
        let (client, connection) = tokio::time::timeout(limit, self.pg.connect(tls))
            .await
            .map_err(|_| self.unreachable(format!("no answer within {}s", limit.as_secs())))?
            .map_err(|e| self.classify(&e))?;
        let name = self.name.clone();
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::warn!(provider = %name, error = %e, "postgres provider connection ended");
            }
        });
        Ok(client)
    }

    /// The role name for a request.
    pub fn account_name(&self, id: &RequestId) -> String {
        format!("{}{}", self.prefix, id)
    }

    /// The prefix of every role this provider owns.
    pub fn role_prefix(&self) -> &str {
        &self.prefix
    }

    fn unreachable(&self, detail: impl Into<String>) -> ProviderError {
        ProviderError::Unreachable {
            provider: self.name.to_string(),
            detail: detail.into(),
        }
    }

    fn refused(&self, detail: impl Into<String>) -> ProviderError {
        ProviderError::Refused {
            provider: self.name.to_string(),
            detail: detail.into(),
        }
    }

    fn missing_role(&self, role: &str) -> ProviderError {
        self.refused(format!(
            "role {role} does not exist on {}: create it (CREATE ROLE {role} NOLOGIN) or fix the entitlement",
            self.name
        ))
    }

    /// Server errors that a retry may cure count as `Unreachable` (retryable);
    /// everything else the server says is a refusal.
    fn classify(&self, e: &tokio_postgres::Error) -> ProviderError {
        let Some(db) = e.as_db_error() else {
            let mut detail = e.to_string();
            let mut source = std::error::Error::source(e);
            while let Some(s) = source {
                detail.push_str(": ");
                detail.push_str(&s.to_string());
                source = s.source();
            }
            return self.unreachable(detail);
        };
        let code = db.code().code();
        let mut detail = format!("{} (SQLSTATE {code})", db.message());
        if let Some(d) = db.detail() {
            detail.push_str("; ");
            detail.push_str(d);
        }
        if let Some(h) = db.hint() {
            detail.push_str("; hint: ");
            detail.push_str(h);
        }
        let transient = ["08", "40", "53", "57"]
            .iter()
            .any(|class| code.starts_with(class))
            || code == "55P03"
            || (code == "XX000" && db.message() == "tuple concurrently updated");
        if transient {
            self.unreachable(detail)
        } else {
            self.refused(detail)
        }
    }

    async fn connect(&self) -> Result<Arc<Conn>, ProviderError> {
        let client = match &self.tls {
            None => self.open(NoTls).await?,
            Some(tls) => self.open(crate::tls::MakeRustls(tls.clone())).await?,
        };
        let prepare = async {
            Ok::<_, tokio_postgres::Error>((
                client.prepare(DESCRIBE).await?,
                client.prepare(TERMINATE_BY_OID).await?,
                client.prepare(LIST_MANAGED).await?,
            ))
        };
        let (describe, terminate_by_oid, list_managed) =
            prepare.await.map_err(|e| self.classify(&e))?;
        tracing::debug!(provider = %self.name, "postgres provider connected");
        Ok(Arc::new(Conn {
            client,
            describe,
            terminate_by_oid,
            list_managed,
        }))
    }

    /// The cached connection, reconnecting if it was closed.
    async fn conn(&self) -> Result<Arc<Conn>, ProviderError> {
        let mut slot = self.conn.lock().await;
        if let Some(c) = slot.as_ref() {
            if !c.client.is_closed() {
                return Ok(c.clone());
            }
        }
        *slot = None;
        let c = self.connect().await?;
        *slot = Some(c.clone());
        Ok(c)
    }

    /// Runs `op` on the cached connection; if that connection turns out to be
    /// dead (server restart, idle kill), runs it once more on a fresh one.
    /// Every operation here is idempotent, so the repeat is safe.
    async fn with_conn<'a, T, F, Fut>(&'a self, op: F) -> Result<T, ProviderError>
    where
        F: Fn(Arc<Conn>) -> Fut,
        Fut: Future<Output = Result<T, Failure>> + 'a,
    {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let conn = self.conn().await?;
            match op(conn.clone()).await {
                Ok(v) => return Ok(v),
                Err(Failure::Provider(e)) => return Err(e),
                Err(Failure::Pg(e)) => {
                    if attempt == 1 && (e.is_closed() || conn.client.is_closed()) {
                        tracing::debug!(provider = %self.name, error = %e, "connection lost; retrying once");
                        continue;
                    }
                    return Err(self.classify(&e));
                }
            }
        }
    }

    /// The entitlement role as an identifier, quoted by the server once per role.
    async fn role_ident(&self, c: &Conn, role: &str) -> Result<String, Failure> {
        if let Some(ident) = self.role_idents.lock().expect("not poisoned").get(role) {
            return Ok(ident.clone());
        }
        let ident: String = c.client.query_one(&c.describe, &[&role]).await?.get(0);
        self.role_idents
            .lock()
            .expect("not poisoned")
            .insert(role.to_owned(), ident.clone());
        Ok(ident)
    }

    fn generated(&self, what: &str, s: &str) -> Result<Sql, Failure> {
        Sql::generated(s).ok_or_else(|| {
            // The value is not echoed: it may be a password verifier.
            Failure::Provider(self.refused(format!("generated {what} has unexpected characters")))
        })
    }

    /// `role "x" does not exist` about the entitlement role gets the hint.
    fn apply_error(&self, e: tokio_postgres::Error, role: &str) -> Failure {
        let about_role = e
            .as_db_error()
            .is_some_and(|db| db.message().contains(&format!("\"{role}\"")));
        if is(&e, &SqlState::UNDEFINED_OBJECT) && about_role {
            return self.missing_role(role).into();
        }
        e.into()
    }

    /// One round trip, one transaction: create, or (a retry after a crash, or
    /// another replica got there first) refresh password, expiry, limit and membership.
    async fn apply_on(
        &self,
        c: Arc<Conn>,
        grant: &GrantSpec,
        account: &str,
        role: &str,
    ) -> Result<(), Failure> {
        let role_ident = self.role_ident(&c, role).await?;
        let account = self.generated("account", account)?.ident;
        let until = rfc3339_utc(grant.not_after).ok_or_else(|| {
            self.refused(format!("not_after {} is out of range", grant.not_after))
        })?;
        let until = self.generated("not_after", &until)?.literal;
        let password = self
            .generated("verifier", &scram::verifier(&grant.secret))?
            .literal;
        let limit = self.connection_limit.min(i32::MAX as u32);
        let attrs =
            format!("LOGIN PASSWORD {password} VALID UNTIL {until} CONNECTION LIMIT {limit}");
        match c
            .client
            .batch_execute(&format!(
                "CREATE ROLE {account} {attrs} IN ROLE {role_ident}"
            ))
            .await
        {
            Ok(()) => return Ok(()),
            Err(e) if is(&e, &SqlState::DUPLICATE_OBJECT) => {}
            Err(e) => return Err(self.apply_error(e, role)),
        }
        let refresh = format!("ALTER ROLE {account} {attrs}; GRANT {role_ident} TO {account}");
        c.client
            .batch_execute(&refresh)
            .await
            .map_err(|e| self.apply_error(e, role))
    }

    /// Terminates the role's sessions and drops it in one transaction (its
    /// objects are kept, owned by airlock's user; its privileges go), then ends
    /// any session that logged in meanwhile. Absent role = success.
    async fn remove_on(&self, c: Arc<Conn>, account: &Sql) -> Result<(), Failure> {
        let (ident, literal) = (&account.ident, &account.literal);
        let remove = format!(
            "SELECT r.oid::text, (SELECT pg_catalog.count(pg_catalog.pg_terminate_backend(a.pid)) \
               FROM pg_catalog.pg_stat_activity a WHERE a.usesysid = r.oid)::text \
               FROM pg_catalog.pg_roles r WHERE r.rolname = {literal} AND r.rolname <> current_user; \
             REASSIGN OWNED BY {ident} TO CURRENT_USER; DROP OWNED BY {ident}; DROP ROLE {ident}"
        );
        let first = match c.client.simple_query(&remove).await {
            Err(e) if is(&e, &SqlState::DEPENDENT_OBJECTS_STILL_EXIST) => {
                // A session logged in again and created something after the
                // terminate: shut the door first (committed), then once more.
                // If objects in other databases hold the role, it at least can
                // no longer log in, and the error names those databases.
                match c
                    .client
                    .batch_execute(&format!("ALTER ROLE {ident} NOLOGIN"))
                    .await
                {
                    Err(e) if is(&e, &SqlState::UNDEFINED_OBJECT) => return Ok(()),
                    r => r?,
                }
                c.client.simple_query(&remove).await
            }
            r => r,
        };
        let messages = match first {
            Ok(m) => m,
            Err(e) if is(&e, &SqlState::UNDEFINED_OBJECT) => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        // No row: the role is airlock's own user, whose DROP the server refuses.
        let Some((oid, terminated)) = messages.iter().find_map(|m| match m {
            SimpleQueryMessage::Row(row) => {
                Some((row.get(0)?.to_owned(), row.get(1).unwrap_or("0").to_owned()))
            }
            _ => None,
        }) else {
            return Ok(());
        };
        // Sessions that logged in between the terminate and the commit.
        let late: i64 = c
            .client
            .query_one(&c.terminate_by_oid, &[&oid])
            .await?
            .get(0);
        tracing::debug!(provider = %self.name, account = %ident, terminated, late, "removed role");
        Ok(())
    }
}

#[async_trait::async_trait]
impl Provider for PostgresProvider {
    fn name(&self) -> &ProviderName {
        &self.name
    }

    fn kind(&self) -> &'static str {
        "postgres"
    }

    async fn check(&self) -> Result<(), ProviderError> {
        self.with_conn(|c| async move {
            c.client.simple_query("SELECT 1").await?;
            Ok(())
        })
        .await
    }

    async fn apply(&self, grant: &GrantSpec) -> Result<(), ProviderError> {
        let account = self.account_name(&grant.request_id);
        if account.len() > MAX_ROLE_NAME_LEN {
            return Err(self.refused(format!(
                "role name {account} is longer than {MAX_ROLE_NAME_LEN} bytes: shorten role_prefix"
            )));
        }
        let role = grant.target_of::<Target>(&self.name)?.role.as_str();
        self.with_conn(|c| self.apply_on(c, grant, &account, role))
            .await?;
        tracing::debug!(provider = %self.name, account, role, "applied grant");
        Ok(())
    }

    async fn remove(&self, grant: &GrantSpec) -> Result<(), ProviderError> {
        let name = self.account_name(&grant.request_id);
        let account = Sql::generated(&name)
            .ok_or_else(|| self.refused(format!("account `{name}` has unexpected characters")))?;
        // Dropped even if someone made it a superuser: it is this grant's account.
        self.with_conn(|c| self.remove_on(c, &account)).await
    }

    async fn list_managed(&self) -> Result<Vec<ManagedAccount>, ProviderError> {
        let rows = self
            .with_conn(
                |c| async move { Ok(c.client.query(&c.list_managed, &[&self.prefix]).await?) },
            )
            .await?;
        Ok(rows
            .iter()
            .map(|row| {
                let account: String = row.get(0);
                let request_id = account
                    .strip_prefix(&self.prefix)
                    .and_then(|s| RequestId::parse(s).ok());
                ManagedAccount {
                    account,
                    request_id,
                }
            })
            .collect())
    }

    async fn remove_account(&self, account: &str) -> Result<(), ProviderError> {
        if account.len() <= self.prefix.len() || !account.starts_with(&self.prefix) {
            return Err(self.refused(format!(
                "{account} does not start with role_prefix {}: airlock only removes roles it owns",
                self.prefix
            )));
        }
        // Drift: the name may be anything, so the server quotes it, and
        // airlock's own user and superusers are left to a human.
        self.with_conn(|c| async move {
            let row = c.client.query_one(&c.describe, &[&account]).await?;
            let (is_super, is_self): (bool, bool) = (row.get(2), row.get(3));
            if is_self {
                return Err(self
                    .refused(format!(
                        "{account} is the role airlock connects as; it will not remove it"
                    ))
                    .into());
            }
            if is_super {
                return Err(self
                    .refused(format!(
                        "{account} is a superuser, which airlock never creates; remove it by hand"
                    ))
                    .into());
            }
            self.remove_on(
                c,
                &Sql {
                    ident: row.get(0),
                    literal: row.get(1),
                },
            )
            .await
        })
        .await
    }

    async fn credentials(
        &self,
        grant: &GrantSpec,
        _request: &CredentialRequest,
    ) -> Result<serde_json::Value, ProviderError> {
        Ok(self.credentials_json(grant))
    }

    fn gateway_login(
        &self,
        grant: &GrantSpec,
    ) -> Result<Option<crate::gateway::Upstream>, ProviderError> {
        let Some((host, port)) = self.target.clone() else {
            return Ok(None);
        };
        Ok(Some(crate::gateway::Upstream::Postgres(
            crate::gateway::PgLogin {
                host,
                port,
                database: self.database.clone(),
                user: self.account_name(&grant.request_id),
                password: zeroize::Zeroizing::new(scram::password(&grant.secret)),
                tls: self.tls.clone(),
            },
        )))
    }

    async fn doctor(&self, entitlements: &[CatalogTarget]) -> Result<Vec<Finding>, ProviderError> {
        // One check per role, naming every entitlement that grants it.
        let mut by_role: std::collections::BTreeMap<String, Vec<String>> = Default::default();
        for (entitlement, role) in CatalogTarget::roles_of(entitlements, |t: &Target| &t.role) {
            by_role
                .entry(role)
                .or_default()
                .push(entitlement.to_string());
        }
        let roles: Vec<(String, String)> = by_role
            .into_iter()
            .map(|(r, e)| (e.join(", "), r))
            .collect();
        let roles = &roles;
        self.with_conn(|c| async move {
            let me = c
                .client
                .query_one(
                    "SELECT current_user::text, rolsuper, rolcreaterole,                      current_setting('server_version_num')::int                      FROM pg_roles WHERE rolname = current_user",
                    &[],
                )
                .await?;
            let (user, superuser, createrole, version): (String, bool, bool, i32) =
                (me.get(0), me.get(1), me.get(2), me.get(3));
            let who = ident(&user);
            let mut out = Vec::new();
            if superuser {
                out.push(Finding {
                    check: "superuser".into(),
                    ok: true,
                    detail: format!("{user} is a superuser: every check below holds (a role with only CREATEROLE, pg_signal_backend and ADMIN on the entitlement roles is enough)"),
                    fix: None,
                });
            }
            out.push(Finding {
                check: "CREATEROLE".into(),
                ok: superuser || createrole,
                detail: format!("{user} {} create and drop the per-grant login roles", if superuser || createrole { "may" } else { "may not" }),
                fix: (!superuser && !createrole).then(|| format!("ALTER ROLE {who} CREATEROLE;")),
            });
            let signal: bool = c
                .client
                .query_one("SELECT pg_has_role(current_user, 'pg_signal_backend', 'MEMBER')", &[])
                .await?
                .get(0);
            out.push(Finding {
                check: "pg_signal_backend".into(),
                ok: superuser || signal,
                detail: format!("{user} {} end the sessions of a revoked or expired grant", if superuser || signal { "may" } else { "may not" }),
                fix: (!superuser && !signal).then(|| format!("GRANT pg_signal_backend TO {who};")),
            });
            for (entitlement, role) in roles {
                let exists = c
                    .client
                    .query_opt("SELECT 1 FROM pg_roles WHERE rolname = $1", &[role])
                    .await?
                    .is_some();
                if !exists {
                    out.push(Finding {
                        check: format!("role {role}"),
                        ok: false,
                        detail: format!("{role} does not exist (granted by {entitlement})"),
                        fix: Some(format!("CREATE ROLE {} NOLOGIN;  -- then GRANT it the privileges the entitlement stands for", ident(role))),
                    });
                    continue;
                }
                // Before PostgreSQL 16, CREATEROLE alone may grant any non-superuser role.
                let admin: bool = superuser
                    || (version < 160000 && createrole)
                    || c.client
                        .query_one("SELECT pg_has_role(current_user, $1, 'MEMBER WITH ADMIN OPTION')", &[role])
                        .await?
                        .get::<_, bool>(0);
                out.push(Finding {
                    check: format!("ADMIN on {role}"),
                    ok: admin,
                    detail: format!("{user} {} grant {role} (for {entitlement})", if admin { "may" } else { "may not" }),
                    fix: (!admin).then(|| format!("GRANT {} TO {who} WITH ADMIN OPTION;", ident(role))),
                });
            }
            Ok(out)
        })
        .await
    }

    async fn standing_access(
        &self,
        entitlements: &[CatalogTarget],
    ) -> Result<Vec<StandingAccess>, ProviderError> {
        let roles = CatalogTarget::roles_of(entitlements, |t: &Target| &t.role);
        if roles.is_empty() {
            return Ok(Vec::new());
        }
        let (roles, prefix) = (&roles, &self.prefix);
        self.with_conn(|c| async move {
            // Direct or inherited membership in the entitlement role by any
            // login role airlock did not create: standing privilege.
            let mut out = Vec::new();
            for (entitlement, role) in roles {
                let rows = c
                    .client
                    .query(
                        "WITH RECURSIVE m(member) AS ( \
                           SELECT a.member FROM pg_auth_members a \
                           JOIN pg_roles r ON r.oid = a.roleid WHERE r.rolname = $1 \
                           UNION SELECT a.member FROM pg_auth_members a JOIN m ON a.roleid = m.member) \
                         SELECT DISTINCT r.rolname FROM m JOIN pg_roles r ON r.oid = m.member \
                         WHERE r.rolcanlogin AND left(r.rolname, length($2)) <> $2 ORDER BY 1",
                        &[role, prefix],
                    )
                    .await?;
                for row in rows {
                    out.push(StandingAccess {
                        entitlement: entitlement.clone(),
                        principal: row.get(0),
                        detail: format!("login role is a member of {role} outside airlock"),
                    });
                }
            }
            Ok(out)
        })
        .await
    }
}

impl PostgresProvider {
    /// Connection details for a grant (the password is re-derived, never stored).
    pub fn credentials_json(&self, grant: &GrantSpec) -> serde_json::Value {
        serde_json::json!({
            "username": self.account_name(&grant.request_id),
            "password": scram::password(&grant.secret),
            "host": self.public_host,
            "port": self.public_port,
            "database": self.database,
            "expires_at": rfc3339_utc(grant.not_after),
        })
    }
}

/// A role name as a PostgreSQL identifier in a statement people copy.
fn ident(name: &str) -> String {
    let plain = name.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if plain {
        name.to_string()
    } else {
        format!("\"{}\"", name.replace('"', "\"\""))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use airlock_core::UserName;
    use time::macros::datetime;

    fn config(url: &str) -> Config {
        Config {
            url: url.into(),
            ..Default::default()
        }
    }

    fn grant() -> GrantSpec {
        GrantSpec {
            request_id: RequestId::parse("r0123456789abcdef").unwrap(),
            requester: UserName::parse("alice").unwrap(),
            email: None,
            entitlement: airlock_core::EntitlementName::parse("payments-db-write").unwrap(),
            target: crate::EntitlementTarget::Postgres(Target {
                role: "payments_writer".into(),
            }),
            not_after: datetime!(2030-01-02 03:04:05.678 +02:00),
            secret: [7; 32],
        }
    }

    fn provider(cfg: &Config) -> PostgresProvider {
        PostgresProvider::new(ProviderName::parse("pg-main").unwrap(), cfg).unwrap()
    }

    #[test]
    fn credentials_come_from_the_url_by_default() {
        let p = provider(&config("postgres://admin:s3cret@db.internal:6543/payments"));
        let c = p.credentials_json(&grant());
        assert_eq!(c["username"], "airlock_r0123456789abcdef");
        assert_eq!(c["host"], "db.internal");
        assert_eq!(c["port"], 6543);
        assert_eq!(c["database"], "payments");
        assert_eq!(c["expires_at"], "2030-01-02T01:04:05Z");
        assert_eq!(c["password"], scram::password(&[7; 32]));
    }

    #[test]
    fn public_host_and_port_override_the_url_and_database_defaults_to_postgres() {
        let mut cfg = config("postgres://admin@10.0.0.5");
        cfg.public_host = Some("pg.example.com".into());
        cfg.public_port = Some(5433);
        cfg.role_prefix = Some("zt_".into());
        let c = provider(&cfg).credentials_json(&grant());
        assert_eq!(c["host"], "pg.example.com");
        assert_eq!(c["port"], 5433);
        assert_eq!(c["database"], "postgres");
        assert_eq!(c["username"], "zt_r0123456789abcdef");
    }

    #[test]
    fn new_does_not_connect_and_refuses_a_bad_url_without_echoing_it() {
        assert!(PostgresProvider::new(
            ProviderName::parse("pg").unwrap(),
            &config("postgres://x@127.0.0.1:1/db")
        )
        .is_ok());
        let err = PostgresProvider::new(
            ProviderName::parse("pg").unwrap(),
            &config("postgres://u:hunter2@h:notaport/db"),
        )
        .err()
        .unwrap()
        .to_string();
        assert!(err.contains("pg") && !err.contains("hunter2"), "{err}");
    }
}
