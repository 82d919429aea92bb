//! MariaDB provider: a grant is a user `<role_prefix><request id>`@`%` whose
//! default role is the entitlement role, capped by MAX_USER_CONNECTIONS, plus
//! an EVENT that drops it and kills its sessions at `not_after` inside the
//! server (native expiry, when the event scheduler is on). Names reach SQL only
//! as backtick-quoted identifiers (see `sql`); lookups bind their values.
//!
//! One cached connection serves every call, one call at a time (account DDL
//! serializes on the server anyway); each write is one multi-statement round trip.

mod errors;
mod native_password;
mod session;
mod sql;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::time::Duration;

use airlock_core::{ProviderName, RequestId};
use mysql_async::prelude::Queryable;
use mysql_async::{Opts, OptsBuilder};
use tokio::sync::Mutex;

use crate::rfc3339_utc;
use crate::{
    BuildError, CatalogTarget, CredentialRequest, Finding, GrantSpec, ManagedAccount, Provider,
    ProviderError, StandingAccess,
};

pub mod config;
mod doctor;
pub use config::{Config, Target};
use errors::{code, connection_lost, scrub, server_error, Failure};
use session::Session;

/// Prefix of the users airlock creates when `role_prefix` is not set.
pub const DEFAULT_ROLE_PREFIX: &str = "airlock_";
/// Per-grant MAX_USER_CONNECTIONS when `connection_limit` is not set.
pub const DEFAULT_CONNECTION_LIMIT: u32 = 10;
/// Schema that holds the expiry events when the URL names none.
pub const DEFAULT_EVENT_SCHEMA: &str = "mysql";
/// How long connecting (TCP, handshake, login) may take, so a dead host fails fast.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one operation may wait for the server before its connection is
/// dropped (so a hung server cannot block every later call).
pub const OPERATION_TIMEOUT: Duration = Duration::from_secs(30);
/// MariaDB's limit on user names.
const MAX_USER_NAME_LEN: usize = 80;
/// MariaDB's limit on identifiers such as event names.
const MAX_EVENT_NAME_LEN: usize = 64;

/// `@@event_scheduler` as last seen.
const SCHEDULER_UNKNOWN: u8 = 0;
const SCHEDULER_ON: u8 = 1;
const SCHEDULER_OFF: u8 = 2;

/// `[providers.NAME] kind = "mysql"` (MariaDB).
pub struct MysqlProvider {
    name: ProviderName,
    opts: Opts,
    prefix: String,
    connection_limit: u32,
    public_host: String,
    public_port: u16,
    event_schema: String,
    session: Mutex<Option<Session>>,
    scheduler: AtomicU8,
    warned_scheduler_off: AtomicBool,
}

impl MysqlProvider {
    /// Parses the configuration; does not connect (the server may be down).
    pub fn new(name: ProviderName, config: &Config) -> Result<Self, BuildError> {
        let bad = |detail: String| BuildError::Config {
            provider: name.to_string(),
            detail,
        };
        config.validate().map_err(|e| bad(e.detail))?;
        // The parse error never echoes the URL, which may hold a password.
        let opts = Opts::from_url(&config.url).map_err(|e| {
            bad(format!(
                "`url` is not a MariaDB URL (mysql://user:password@host:3306/schema): {e}"
            ))
        })?;
        let connection_limit = config.connection_limit.unwrap_or(DEFAULT_CONNECTION_LIMIT);
        let event_schema = opts.db_name().unwrap_or(DEFAULT_EVENT_SCHEMA).to_owned();
        let public_host = config
            .public_host
            .clone()
            .unwrap_or_else(|| opts.ip_or_hostname().to_owned());
        let public_port = config.public_port.unwrap_or(opts.tcp_port());
        // Never hop to the server's unix socket: the account would then be
        // matched as @localhost, not as the host the URL names.
        let opts = OptsBuilder::from_opts(opts).prefer_socket(false).into();
        Ok(MysqlProvider {
            name,
            opts,
            prefix: config
                .role_prefix
                .clone()
                .unwrap_or_else(|| DEFAULT_ROLE_PREFIX.into()),
            connection_limit,
            public_host,
            public_port,
            event_schema,
            session: Mutex::new(None),
            scheduler: AtomicU8::new(SCHEDULER_UNKNOWN),
            warned_scheduler_off: AtomicBool::new(false),
        })
    }

    /// The user name for a request.
    pub fn account_name(&self, id: &RequestId) -> String {
        format!("{}{}", self.prefix, id)
    }

    /// The prefix of every user this provider owns.
    pub fn role_prefix(&self) -> &str {
        &self.prefix
    }

    /// The schema that holds the expiry events.
    pub fn event_schema(&self) -> &str {
        &self.event_schema
    }

    /// Whether grants also expire inside the server (`@@event_scheduler` is ON);
    /// `None` until the provider has talked to the server.
    pub fn native_expiry_enabled(&self) -> Option<bool> {
        match self.scheduler.load(Ordering::Relaxed) {
            SCHEDULER_ON => Some(true),
            SCHEDULER_OFF => Some(false),
            _ => None,
        }
    }

    /// Records `@@event_scheduler`; warns once per provider when it is not ON.
    fn note_scheduler(&self, value: &str) {
        let on = value.eq_ignore_ascii_case("ON");
        self.scheduler.store(
            if on { SCHEDULER_ON } else { SCHEDULER_OFF },
            Ordering::Relaxed,
        );
        if !on && !self.warned_scheduler_off.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                provider = %self.name,
                event_scheduler = value,
                "MariaDB's event scheduler is {value}, so native expiry is off: grants end on time only \
                 while airlock runs (its reconciler removes them). Turn it on with \
                 `SET GLOBAL event_scheduler = ON` and keep it on across restarts with \
                 `event_scheduler = ON` under [mysqld] in my.cnf (DISABLED needs that and a restart)"
            );
        }
    }

    /// Creates the user in one round trip, or (it exists: a retry or a second
    /// apply) brings it to the same state in a second. A refusal undoes it.
    async fn apply_on(
        &self,
        s: &mut Session,
        grant: &sql::Grant<'_>,
        create: &str,
        refresh: &str,
    ) -> Result<(), Failure> {
        let result = match s.conn.query_drop(create).await {
            Err(e) if server_error(&e).is_some_and(|s| s.code == code::CANNOT_USER) => {
                s.conn.query_drop(refresh).await
            }
            r => r,
        };
        let Err(e) = result else {
            return Ok(());
        };
        let refusal = !connection_lost(&e) && !self.classify(&e).is_retryable();
        if !refusal {
            return Err(e.into());
        }
        // A missing role or privilege: leave no half-made user behind.
        if let Err(undo) = s
            .conn
            .query_drop(sql::remove(&self.event_schema, grant.user))
            .await
        {
            tracing::warn!(provider = %self.name, account = grant.user, error = %undo,
                "could not undo a refused grant; the reconciler's remove will");
        }
        let me = sql::user_at(&s.me_user, &s.me_host);
        Err(self.apply_refusal(&e, grant.role, &me).into())
    }

    /// Drops the user and its event, then kills its sessions. Absent = success.
    async fn remove_on(&self, s: &mut Session, user: &str) -> Result<(), Failure> {
        if user == s.me_user {
            return Err(self
                .refused(format!(
                    "{user} is the user airlock connects as; it will not remove it"
                ))
                .into());
        }
        s.conn
            .query_drop(sql::remove(&self.event_schema, user))
            .await?;
        if !s.can_kill {
            return Err(self
                .refused(format!(
                    "dropped {user}, but its open sessions may remain: {}",
                    self.cannot_kill(s)
                ))
                .into());
        }
        tracing::debug!(provider = %self.name, account = user, "removed user");
        Ok(())
    }

    /// Connection details for a grant (the password is re-derived, never stored).
    pub fn credentials_json(&self, grant: &GrantSpec) -> serde_json::Value {
        serde_json::json!({
            "username": self.account_name(&grant.request_id),
            "password": native_password::password(&grant.secret),
            "host": self.public_host,
            "port": self.public_port,
            "expires_at": rfc3339_utc(grant.not_after),
        })
    }
}
#[async_trait::async_trait]
impl Provider for MysqlProvider {
    fn name(&self) -> &ProviderName {
        &self.name
    }

    fn kind(&self) -> &'static str {
        "mysql"
    }

    async fn check(&self) -> Result<(), ProviderError> {
        self.with_session(|mut s| async move {
            let r = s
                .conn
                .query_first::<String, _>("SELECT @@event_scheduler")
                .await;
            let r = match r {
                Ok(v) => {
                    self.note_scheduler(v.as_deref().unwrap_or("OFF"));
                    if s.can_kill {
                        Ok(())
                    } else {
                        Err(self.refused(self.cannot_kill(&s)).into())
                    }
                }
                Err(e) => Err(e.into()),
            };
            (s, r)
        })
        .await
    }

    async fn apply(&self, grant: &GrantSpec) -> Result<(), ProviderError> {
        let user = self.account_name(&grant.request_id);
        if user.len() > MAX_USER_NAME_LEN {
            return Err(self.refused(format!(
                "user name {user} is longer than {MAX_USER_NAME_LEN} characters: shorten role_prefix"
            )));
        }
        let role = grant.target_of::<Target>(&self.name)?.role.as_str();
        let not_after = sql::utc_datetime(grant.not_after).ok_or_else(|| {
            self.refused(format!(
                "not_after {} is outside what a MariaDB event can be scheduled at (1970 to {})",
                grant.not_after,
                sql::LAST_EVENT_TIME
            ))
        })?;
        let hash = native_password::hash(&grant.secret);
        let g = sql::Grant {
            user: &user,
            role,
            hash: &hash,
            limit: self.connection_limit,
            schema: &self.event_schema,
            not_after: &not_after,
            request_id: grant.request_id.as_str(),
        };
        let (Some(create), Some(refresh)) = (g.create(), g.refresh()) else {
            return Err(self.refused("generated SQL text has unexpected characters"));
        };
        let (g, create, refresh) = (&g, &create, &refresh);
        self.with_session(|mut s| async move {
            let r = self.apply_on(&mut s, g, create, refresh).await;
            (s, r)
        })
        .await
        .map_err(|e| scrub(e, &hash))?;
        tracing::debug!(provider = %self.name, account = user, role, "applied grant");
        Ok(())
    }

    async fn remove(&self, grant: &GrantSpec) -> Result<(), ProviderError> {
        let user = &self.account_name(&grant.request_id);
        self.with_session(|mut s| async move {
            let r = self.remove_on(&mut s, user).await;
            (s, r)
        })
        .await
    }

    async fn list_managed(&self) -> Result<Vec<ManagedAccount>, ProviderError> {
        let schema = &self.event_schema;
        // Users, and expiry events whose user is gone (dropped by hand, or a
        // remove that stopped half-way): both are airlock's to clean up.
        let names = self
            .with_session(|mut s| async move {
                let r = async {
                    let users: Vec<String> = s
                        .conn
                        .query("SELECT User FROM mysql.user WHERE Host = '%' AND is_role = 'N'")
                        .await?;
                    let events: Vec<String> = s
                        .conn
                        .exec(
                            "SELECT EVENT_NAME FROM information_schema.EVENTS WHERE EVENT_SCHEMA = ?",
                            (schema,),
                        )
                        .await?;
                    let names: BTreeSet<String> = users
                        .into_iter()
                        .chain(events)
                        .filter(|n| {
                            n.len() > self.prefix.len()
                                && n.starts_with(&self.prefix)
                                && *n != s.me_user
                        })
                        .collect();
                    Ok::<_, Failure>(names)
                }
                .await;
                (s, r)
            })
            .await?;
        Ok(names
            .into_iter()
            .map(|account| ManagedAccount {
                request_id: account
                    .strip_prefix(&self.prefix)
                    .and_then(|s| RequestId::parse(s).ok()),
                account,
            })
            .collect())
    }

    async fn remove_account(&self, account: &str) -> Result<(), ProviderError> {
        if account.len() <= self.prefix.len() || !account.starts_with(&self.prefix) {
            return Err(self.refused(format!(
                "{account} does not start with role_prefix {}: airlock only removes users it owns",
                self.prefix
            )));
        }
        self.with_session(|mut s| async move {
            let r = async {
                let superuser: Option<String> = s
                    .conn
                    .exec_first(
                        "SELECT Super_priv FROM mysql.user WHERE User = ? AND Host = '%'",
                        (account,),
                    )
                    .await?;
                if superuser.as_deref() == Some("Y") {
                    return Err(self
                        .refused(format!(
                            "{account} has SUPER, which airlock never grants; remove it by hand"
                        ))
                        .into());
                }
                self.remove_on(&mut s, account).await
            }
            .await;
            (s, r)
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

    async fn doctor(&self, entitlements: &[CatalogTarget]) -> Result<Vec<Finding>, ProviderError> {
        let mut roles: std::collections::BTreeMap<String, Vec<String>> = Default::default();
        for (entitlement, role) in CatalogTarget::roles_of(entitlements, |t: &Target| &t.role) {
            roles.entry(role).or_default().push(entitlement);
        }
        let roles = &roles;
        self.with_session(|mut s| async move {
            let r = self.doctor_on(&mut s, roles).await;
            (s, r)
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
        let roles = &roles;
        self.with_session(|mut s| async move {
            let r = self.standing_on(&mut s, roles).await;
            (s, r)
        })
        .await
    }
}

impl MysqlProvider {
    /// Users (not roles) holding an entitlement role directly or through
    /// other roles, except airlock's grant users and airlock itself.
    async fn standing_on(
        &self,
        s: &mut Session,
        roles: &[(String, String)],
    ) -> Result<Vec<StandingAccess>, Failure> {
        // Role-to-role grants have Host ''; MariaDB refuses cycles.
        const HOLDERS: &str = "\
            WITH RECURSIVE holder (User, Host, Role) AS ( \
              SELECT User, Host, Role FROM mysql.roles_mapping WHERE Role = ? \
              UNION \
              SELECT m.User, m.Host, m.Role FROM mysql.roles_mapping m \
                JOIN holder h ON m.Role = h.User AND h.Host = '') \
            SELECT h.User, h.Host, h.Role FROM holder h \
              JOIN mysql.user u ON u.User = h.User AND u.Host = h.Host AND u.is_role = 'N' \
            ORDER BY 1, 2, 3";
        let mut out = Vec::new();
        for (entitlement, role) in roles {
            let rows: Vec<(String, String, String)> = s.conn.exec(HOLDERS, (role,)).await?;
            for (user, host, via) in rows {
                let ours = user.starts_with(&self.prefix) && host == "%";
                let me = user == s.me_user && host == s.me_host;
                if ours || me {
                    continue;
                }
                let principal = format!("{user}@{host}");
                if out.iter().any(|a: &StandingAccess| {
                    a.entitlement == *entitlement && a.principal == principal
                }) {
                    continue;
                }
                let detail = if via == *role {
                    format!("user holds role {role} outside airlock")
                } else {
                    format!("user holds role {role} through role {via}, outside airlock")
                };
                out.push(StandingAccess {
                    entitlement: entitlement.clone(),
                    principal,
                    detail,
                });
            }
        }
        Ok(out)
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
            target: crate::EntitlementTarget::Mysql(Target {
                role: "payments_writer".into(),
            }),
            not_after: datetime!(2030-01-02 03:04:05.678 +02:00),
            secret: [7; 32],
        }
    }

    fn provider(cfg: &Config) -> Result<MysqlProvider, BuildError> {
        MysqlProvider::new(ProviderName::parse("db-main").unwrap(), cfg)
    }

    /// The message of a configuration `provider` refuses.
    fn refusal(cfg: &Config) -> String {
        provider(cfg).err().expect("refused").to_string()
    }

    #[test]
    fn credentials_come_from_the_url_by_default() {
        let p = provider(&config("mysql://admin:s3cret@db.internal:3307/airlock")).unwrap();
        let c = p.credentials_json(&grant());
        assert_eq!(c["username"], "airlock_r0123456789abcdef");
        assert_eq!(c["host"], "db.internal");
        assert_eq!(c["port"], 3307);
        assert_eq!(c["expires_at"], "2030-01-02T01:04:05Z");
        assert_eq!(c["password"], native_password::password(&[7; 32]));
        assert_eq!(p.event_schema(), "airlock");
        assert_eq!(p.native_expiry_enabled(), None);
    }

    #[test]
    fn public_host_and_port_override_the_url_and_events_default_to_the_mysql_schema() {
        let mut cfg = config("mysql://admin@10.0.0.5/");
        cfg.public_host = Some("db.example.com".into());
        cfg.public_port = Some(6033);
        cfg.role_prefix = Some("zt_".into());
        let p = provider(&cfg).unwrap();
        let c = p.credentials_json(&grant());
        assert_eq!(c["host"], "db.example.com");
        assert_eq!(c["port"], 6033);
        assert_eq!(c["username"], "zt_r0123456789abcdef");
        assert_eq!(p.event_schema(), "mysql");
    }

    #[test]
    fn new_does_not_connect_and_refuses_bad_config_without_echoing_the_password() {
        assert!(provider(&config("mysql://x@127.0.0.1:1/")).is_ok());
        let err = refusal(&config("mysql://u:hunter2@h:notaport/"));
        assert!(err.contains("db-main") && !err.contains("hunter2"), "{err}");
        let err = refusal(&config("postgres://u:hunter2@h/"));
        assert!(!err.contains("hunter2"), "{err}");
        let mut zero = config("mysql://x@h/");
        zero.connection_limit = Some(0);
        assert!(refusal(&zero).contains("connection_limit"));
        let name = ProviderName::parse("db-main").unwrap();
        let missing = airlock_core::config::RawKeys::from_table(toml::Table::new());
        let err = crate::ProviderConfig::read(&name, "mysql", &missing)
            .unwrap_err()
            .to_string();
        assert!(err.contains("needs `url"), "{err}");
    }
}
