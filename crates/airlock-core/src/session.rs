//! Gateway sessions: one connection through `airlock connect` to a grant's
//! target, recorded and cut when the grant ends.

use std::fmt;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::names::{EntitlementName, UserName};
use crate::request::RequestId;

/// Prefix of every session id.
pub const SESSION_ID_PREFIX: &str = "ses_";

/// Opaque session identifier: `ses_` and lowercase base32.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct SessionId(String);

impl SessionId {
    /// Validates an id as found in a URL or CLI argument.
    pub fn parse(s: &str) -> Result<Self, crate::Error> {
        match s.strip_prefix(SESSION_ID_PREFIX) {
            Some(rest)
                if (8..=40).contains(&rest.len())
                    && rest
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()) =>
            {
                Ok(SessionId(s.to_owned()))
            }
            _ => Err(crate::Error::not_found(format!(
                "session `{}`",
                s.chars().take(48).collect::<String>()
            ))),
        }
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for SessionId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        SessionId::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// What a session speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SessionKind {
    /// PostgreSQL wire protocol, credential injected, every query recorded.
    Postgres,
    /// SSH, credential injected, terminal recorded.
    Ssh,
    /// A counted byte relay.
    Tcp,
}

impl SessionKind {
    /// The stored and wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            SessionKind::Postgres => "postgres",
            SessionKind::Ssh => "ssh",
            SessionKind::Tcp => "tcp",
        }
    }

    /// Parses a stored name.
    pub fn parse(s: &str) -> Option<SessionKind> {
        [SessionKind::Postgres, SessionKind::Ssh, SessionKind::Tcp]
            .into_iter()
            .find(|k| k.as_str() == s)
    }
}

/// Why a session ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EndReason {
    /// The person closed the connection.
    ClientClosed,
    /// The grant reached `not_after`.
    NotAfter,
    /// The grant was revoked.
    Revoked,
    /// The user or the entitlement was locked.
    Locked,
    /// A reviewer or admin ended it (`airlock session terminate`).
    Terminated,
    /// The target closed the connection.
    TargetClosed,
    /// The gateway failed or restarted.
    Error,
}

impl EndReason {
    /// The stored and wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            EndReason::ClientClosed => "client_closed",
            EndReason::NotAfter => "not_after",
            EndReason::Revoked => "revoked",
            EndReason::Locked => "locked",
            EndReason::Terminated => "terminated",
            EndReason::TargetClosed => "target_closed",
            EndReason::Error => "error",
        }
    }

    /// Parses a stored name.
    pub fn parse(s: &str) -> Option<EndReason> {
        Self::ALL.into_iter().find(|r| r.as_str() == s)
    }

    /// Every reason.
    pub const ALL: [EndReason; 7] = [
        EndReason::ClientClosed,
        EndReason::NotAfter,
        EndReason::Revoked,
        EndReason::Locked,
        EndReason::Terminated,
        EndReason::TargetClosed,
        EndReason::Error,
    ];
}

/// One gateway session as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Session {
    pub id: SessionId,
    pub request_id: RequestId,
    pub entitlement: EntitlementName,
    /// The requester (only they may connect).
    pub user: UserName,
    pub kind: SessionKind,
    /// The replica that holds the connection.
    pub replica: String,
    pub started_at: OffsetDateTime,
    pub ended_at: Option<OffsetDateTime>,
    /// Bytes from the person to the target.
    pub bytes_up: u64,
    /// Bytes from the target to the person.
    pub bytes_down: u64,
    pub end_reason: Option<EndReason>,
    /// SHA-256 (hex) of the whole recording, set when the session ends.
    pub recording_sha256: Option<String>,
    /// Who asked to end it (`airlock session terminate`), until the holder does.
    pub terminate_requested: Option<String>,
    /// The holder renews this while the session lives; a session whose lease
    /// ran out belongs to a replica that died, and is ended as `error`.
    pub lease_until: OffsetDateTime,
}
