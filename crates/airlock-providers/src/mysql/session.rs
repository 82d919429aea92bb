//! The provider's one cached MariaDB connection: login, the session settings
//! the statements rely on, who airlock is there, and retry on a dead connection.

use std::future::Future;

use mysql_async::prelude::Queryable;
use mysql_async::Conn;

use super::errors::{connection_lost, Failure};
use super::{MysqlProvider, CONNECT_TIMEOUT, OPERATION_TIMEOUT};
use crate::ProviderError;

/// The cached connection and what was learnt about it at login.
pub(super) struct Session {
    pub(super) conn: Conn,
    /// airlock's own account (`CURRENT_USER()`), never listed nor removed.
    pub(super) me_user: String,
    pub(super) me_host: String,
    /// CONNECTION ADMIN (or SUPER): without it `KILL USER` silently ends nothing.
    pub(super) can_kill: bool,
}

impl MysqlProvider {
    async fn connect(&self) -> Result<Session, ProviderError> {
        let conn = tokio::time::timeout(CONNECT_TIMEOUT, Conn::new(self.opts.clone()))
            .await
            .map_err(|_| {
                self.unreachable(format!("no answer within {}s", CONNECT_TIMEOUT.as_secs()))
            })?
            .map_err(|e| self.classify(&e))?;
        let session = self.prepare(conn).await.map_err(|e| match e {
            Failure::Db(e) => self.classify(&e),
            Failure::Provider(e) => e,
        })?;
        tracing::debug!(provider = %self.name, user = %session.me_user, "mysql provider connected");
        Ok(session)
    }

    /// Session settings the statements rely on, and who airlock is.
    async fn prepare(&self, mut conn: Conn) -> Result<Session, Failure> {
        // Event times are written in UTC; the sql_mode pins how text parses.
        conn.query_drop(
            "SET SESSION time_zone = '+00:00', \
             SESSION sql_mode = 'STRICT_ALL_TABLES,NO_ENGINE_SUBSTITUTION'",
        )
        .await?;
        let (version, me, scheduler): (String, String, String) = conn
            .query_first("SELECT VERSION(), CURRENT_USER(), @@event_scheduler")
            .await?
            .unwrap_or_default();
        if !version.contains("MariaDB") {
            return Err(self
                .refused(format!(
                    "the server is {version}, not MariaDB: this provider supports MariaDB 10.5 or later \
                     (MySQL's role and KILL syntax differ)"
                ))
                .into());
        }
        self.note_scheduler(&scheduler);
        // Host names cannot hold `@`; user names can.
        let (me_user, me_host) = me.rsplit_once('@').unwrap_or((me.as_str(), ""));
        let grantee = format!("'{me_user}'@'{me_host}'");
        let holders: Vec<String> = conn
            .query(
                "SELECT GRANTEE FROM information_schema.USER_PRIVILEGES \
                 WHERE PRIVILEGE_TYPE IN ('CONNECTION ADMIN', 'SUPER')",
            )
            .await?;
        Ok(Session {
            can_kill: holders.contains(&grantee),
            me_user: me_user.to_owned(),
            me_host: me_host.to_owned(),
            conn,
        })
    }

    /// Runs `op` on the cached session (connecting if there is none). If a
    /// cached connection turns out to be dead (server restart, idle timeout),
    /// runs it once more on a fresh one: every operation here is idempotent.
    /// `op` owns the session while it runs, so a cancelled call drops the
    /// connection instead of leaving it mid-protocol.
    pub(super) async fn with_session<'a, T, F, Fut>(&'a self, op: F) -> Result<T, ProviderError>
    where
        F: Fn(Session) -> Fut,
        Fut: Future<Output = (Session, Result<T, Failure>)> + 'a,
    {
        let mut slot = self.session.lock().await;
        let mut retried = false;
        loop {
            let (session, cached) = match slot.take() {
                Some(s) => (s, true),
                None => (self.connect().await?, false),
            };
            // On timeout the future, and with it the session, is dropped.
            let Ok((session, result)) = tokio::time::timeout(OPERATION_TIMEOUT, op(session)).await
            else {
                return Err(self.unreachable(format!(
                    "no answer within {}s; the connection was dropped",
                    OPERATION_TIMEOUT.as_secs()
                )));
            };
            let e = match result {
                Ok(v) => {
                    *slot = Some(session);
                    return Ok(v);
                }
                Err(Failure::Provider(e)) => {
                    *slot = Some(session);
                    return Err(e);
                }
                Err(Failure::Db(e)) => e,
            };
            if !connection_lost(&e) {
                *slot = Some(session);
                return Err(self.classify(&e));
            }
            drop(session);
            if cached && !retried {
                retried = true;
                tracing::debug!(provider = %self.name, error = %e, "connection lost; retrying once");
                continue;
            }
            return Err(self.classify(&e));
        }
    }
}
