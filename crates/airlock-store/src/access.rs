//! Who may act at all: identity bindings (an OIDC issuer and subject to the
//! login name they first presented), locks (the incident responder's kill
//! switch) and token administration. Part of [`Store`](crate::Store).

use airlock_core::audit_chain::AuditDraft;
use airlock_core::UserName;
use time::OffsetDateTime;

use crate::{StoreResult, TokenRecord};

/// What binding a login name to an OIDC identity found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BindOutcome {
    /// This identity was bound before; its name is the one stored then.
    Existing(UserName),
    /// The name was free and is now bound to this identity.
    Bound,
    /// Another identity holds the name.
    Taken {
        /// Issuer of the identity that holds the name.
        issuer: String,
        /// Subject of the identity that holds the name.
        subject: String,
    },
}

/// What a lock holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum LockKind {
    /// A user: no tokens, sessions, requests or grants.
    User,
    /// An entitlement: no new requests and no active grants.
    Entitlement,
}

impl LockKind {
    /// The stored and wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            LockKind::User => "user",
            LockKind::Entitlement => "entitlement",
        }
    }

    /// Parses `user` or `entitlement`.
    pub fn parse(s: &str) -> Result<LockKind, airlock_core::Error> {
        match s {
            "user" => Ok(LockKind::User),
            "entitlement" => Ok(LockKind::Entitlement),
            other => Err(airlock_core::Error::invalid(
                "kind",
                format!(
                    "`{}` is not a lock kind: use `user` or `entitlement`",
                    other.chars().take(40).collect::<String>()
                ),
            )),
        }
    }
}

/// A lock in force.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lock {
    pub kind: LockKind,
    /// The locked user or entitlement name.
    pub name: String,
    pub reason: String,
    pub created_by: String,
    pub created_at: OffsetDateTime,
    /// When the lock ends by itself; `None` holds until `unlock`.
    pub expires_at: Option<OffsetDateTime>,
}

/// Which live tokens [`AccessStore::list_tokens`] returns.
#[derive(Debug, Clone, Default)]
pub struct TokenFilter {
    /// Only this user's tokens.
    pub user: Option<UserName>,
    /// Only tokens listed after this one (a page cursor: its `created_at` and hash).
    pub after: Option<(OffsetDateTime, [u8; 32])>,
    /// At most this many (0 = 100, capped at 10,000).
    pub limit: u32,
}

/// Identities, locks and tokens; part of [`Store`](crate::Store).
pub trait AccessStore {
    /// Binds `name` to `(issuer, subject)` unless either is bound already, with
    /// `audit` appended in the same transaction when a new binding is made.
    fn bind_identity(
        &self,
        issuer: &str,
        subject: &str,
        name: &UserName,
        audit: &AuditDraft,
        now: OffsetDateTime,
    ) -> StoreResult<BindOutcome>;

    /// Removes the binding of `name` (so the next login binds anew); false if none.
    fn unbind_identity(
        &self,
        name: &UserName,
        audit: &AuditDraft,
        now: OffsetDateTime,
    ) -> StoreResult<bool>;

    /// Creates or replaces a lock, with its audit event.
    fn put_lock(&self, lock: &Lock, audit: &AuditDraft, now: OffsetDateTime) -> StoreResult<()>;

    /// Removes a lock with its audit event; false (nothing written) if there was none.
    fn remove_lock(
        &self,
        kind: LockKind,
        name: &str,
        audit: &AuditDraft,
        now: OffsetDateTime,
    ) -> StoreResult<bool>;

    /// Locks in force at `now`.
    fn locks(&self, now: OffsetDateTime) -> StoreResult<Vec<Lock>>;

    /// Tokens neither revoked nor expired at `now` that `filter` selects,
    /// newest first (ties by hash).
    fn list_tokens(
        &self,
        filter: &TokenFilter,
        now: OffsetDateTime,
    ) -> StoreResult<Vec<TokenRecord>>;

    /// Records that a token was used at `now`.
    fn touch_token(&self, hash: &[u8; 32], now: OffsetDateTime) -> StoreResult<()>;
}
