//! How MariaDB's answers become provider errors: which ones a retry may cure,
//! which mean the connection is gone, and the hint each refusal carries.

use mysql_async::ServerError;

use super::{sql, MysqlProvider, Session};
use crate::ProviderError;

/// MariaDB error codes the provider acts on.
pub(super) mod code {
    pub const DB_ACCESS_DENIED: u16 = 1044;
    pub const ACCESS_DENIED: u16 = 1045;
    pub const BAD_DB: u16 = 1049;
    pub const TABLE_ACCESS_DENIED: u16 = 1142;
    pub const SPECIFIC_ACCESS_DENIED: u16 = 1227;
    pub const CANNOT_USER: u16 = 1396;
    pub const ACCESS_DENIED_NO_PASSWORD: u16 = 1698;
    pub const INVALID_ROLE: u16 = 1959;
    /// Shutdown, aborted/killed connection, network errors, idle timeout.
    pub const CONNECTION_LOST: &[u16] = &[1053, 1152, 1158, 1159, 1160, 1161, 1927, 4031];
    /// Worth a retry: connection and user limits, lock waits, deadlocks, interrupts.
    pub const TRANSIENT: &[u16] = &[1040, 1203, 1205, 1213, 1226, 1317, 1969];
}

/// What airlock's own MariaDB user needs; quoted in every privilege error.
const PRIVILEGES: &str = "airlock's MariaDB user needs CREATE USER and CONNECTION ADMIN on *.*, \
EVENT on the expiry schema, SELECT on mysql.user and mysql.roles_mapping, UPDATE on mysql.* \
(MariaDB requires it for SET DEFAULT ROLE ... FOR) and each entitlement role WITH ADMIN OPTION \
(see docs/providers/mysql.md)";

/// A failure inside one attempt: the raw driver error (to decide on a retry)
/// or an already-classified one.
pub(super) enum Failure {
    Db(mysql_async::Error),
    Provider(ProviderError),
}

impl From<mysql_async::Error> for Failure {
    fn from(e: mysql_async::Error) -> Self {
        Failure::Db(e)
    }
}

impl From<ProviderError> for Failure {
    fn from(e: ProviderError) -> Self {
        Failure::Provider(e)
    }
}

pub(super) fn server_error(e: &mysql_async::Error) -> Option<&ServerError> {
    match e {
        mysql_async::Error::Server(s) => Some(s),
        _ => None,
    }
}

/// The connection cannot be used any more (a retry on a fresh one may work).
pub(super) fn connection_lost(e: &mysql_async::Error) -> bool {
    match server_error(e) {
        Some(s) => code::CONNECTION_LOST.contains(&s.code) || s.state.starts_with("08"),
        None => e.is_fatal(),
    }
}

impl MysqlProvider {
    pub(super) fn unreachable(&self, detail: impl Into<String>) -> ProviderError {
        ProviderError::Unreachable {
            provider: self.name.to_string(),
            detail: detail.into(),
        }
    }

    pub(super) fn refused(&self, detail: impl Into<String>) -> ProviderError {
        ProviderError::Refused {
            provider: self.name.to_string(),
            detail: detail.into(),
        }
    }

    /// Outages and contention are retryable; whatever else the server says is a refusal.
    pub(super) fn classify(&self, e: &mysql_async::Error) -> ProviderError {
        let Some(s) = server_error(e) else {
            let mut detail = e.to_string();
            let mut source = std::error::Error::source(e);
            while let Some(inner) = source {
                let text = inner.to_string();
                if !detail.contains(&text) {
                    detail.push_str(": ");
                    detail.push_str(&text);
                }
                source = inner.source();
            }
            return self.unreachable(detail);
        };
        let detail = format!(
            "{} (MariaDB error {}, SQLSTATE {})",
            s.message, s.code, s.state
        );
        if code::TRANSIENT.contains(&s.code) || connection_lost(e) || s.state.starts_with("40") {
            return self.unreachable(detail);
        }
        match s.code {
            code::ACCESS_DENIED => {
                self.refused(format!("{detail}: check the user and password in `url`"))
            }
            code::DB_ACCESS_DENIED
            | code::TABLE_ACCESS_DENIED
            | code::SPECIFIC_ACCESS_DENIED
            | code::ACCESS_DENIED_NO_PASSWORD => self.refused(format!("{detail}: {PRIVILEGES}")),
            code::BAD_DB => self.refused(format!(
                "{detail}: the schema in `url` holds the expiry events; create it or name an existing one"
            )),
            _ => self.refused(detail),
        }
    }

    pub(super) fn missing_role(&self, role: &str) -> ProviderError {
        self.refused(format!(
            "role {role} does not exist on {}: create it (CREATE ROLE {role}), grant it to airlock's \
             user WITH ADMIN OPTION, or fix the entitlement",
            self.name
        ))
    }

    /// A refused apply, with the hint that fits the entitlement role.
    pub(super) fn apply_refusal(
        &self,
        e: &mysql_async::Error,
        role: &str,
        me: &str,
    ) -> ProviderError {
        match server_error(e).map(|s| s.code) {
            Some(code::INVALID_ROLE) => self.missing_role(role),
            Some(code::ACCESS_DENIED_NO_PASSWORD) => self.refused(format!(
                "airlock's MariaDB user {me} may not grant role {role}: GRANT {role} TO {me} WITH ADMIN OPTION"
            )),
            _ => self.classify(e),
        }
    }

    pub(super) fn cannot_kill(&self, s: &Session) -> String {
        let me = sql::user_at(&s.me_user, &s.me_host);
        format!(
            "airlock's MariaDB user {me} lacks CONNECTION ADMIN, so KILL USER cannot end other \
             users' sessions: GRANT CONNECTION ADMIN ON *.* TO {me}"
        )
    }
}

/// Replaces `secret` (a password hash) wherever an error quotes it.
pub(super) fn scrub(e: ProviderError, secret: &str) -> ProviderError {
    match e {
        ProviderError::Unreachable { provider, detail } => ProviderError::Unreachable {
            provider,
            detail: detail.replace(secret, "<password hash>"),
        },
        ProviderError::Refused { provider, detail } => ProviderError::Refused {
            provider,
            detail: detail.replace(secret, "<password hash>"),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scrub_hides_the_password_hash() {
        let e = ProviderError::Refused {
            provider: "p".into(),
            detail: "syntax error near '*ABC' WITH".into(),
        };
        assert!(!scrub(e, "*ABC").to_string().contains("*ABC"));
    }
}
