//! Storage behind one trait. `SqliteStore` (default, embedded) and `PgStore`
//! (several replicas on one database) run the same queries (`sql/`, written
//! once) and differ only in their dialect files; no other crate can tell
//! which one runs. Every state change is written together with its audit
//! events in one transaction, and the audit chain head is serialised inside
//! that transaction.

use std::sync::Arc;

use airlock_core::audit_chain::{AuditDraft, Checkpoint, CheckpointSigner, SealedEvent};
use airlock_core::request::{GrantStatus, Request, RequestId, RequestState, Review};
use airlock_core::{GroupName, UserName};
use time::OffsetDateTime;

mod access;
mod codec;
#[cfg(feature = "testkit")]
pub mod conformance;
#[cfg(feature = "testkit")]
pub mod conformance_runs;

/// The reconciler's due-work statements (claim: `$1` now, `$2` owner, `$3`
/// lease end, `$4` limit; next due), for plan checks in tests.
#[cfg(feature = "testkit")]
pub fn due_work_sql() -> (String, String) {
    (
        codec::claim_sql(codec::REQUEST_COLUMNS),
        codec::next_due_sql(),
    )
}
mod notify;
mod pg;
mod runs;
mod sessions;
mod sql;
mod sqlite;

pub use access::{AccessStore, BindOutcome, Lock, LockKind, TokenFilter};
pub use notify::NotifyStore;
pub use pg::PgStore;
pub use runs::{
    LeaseChange, NewRun, RateCheck, RateEvent, RunChange, RunFilter, RunLease, RunStore, Transcript,
};
pub use sessions::{SessionEnd, SessionFilter, SessionStore, SessionWatch};
pub use sqlite::SqliteStore;

/// What can go wrong in the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The change was refused by the domain rules (the closure given to `update_request`).
    #[error(transparent)]
    Rejected(#[from] airlock_core::Error),
    /// A row with this key exists already.
    #[error("{0} already exists")]
    Duplicate(String),
    /// The database cannot be reached or failed; retrying may help.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// Stored data does not decode: a bug or a manual edit.
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
}

/// Result alias for store calls.
pub type StoreResult<T> = Result<T, StoreError>;

/// A change to one request, decided by domain code while the row is locked.
/// An empty change writes nothing.
#[derive(Debug, Clone, Default)]
pub struct Change {
    /// New lifecycle state.
    pub state: Option<RequestState>,
    /// A review to append.
    pub review: Option<Review>,
    /// The grant window `(not_before, not_after)`.
    pub window: Option<(OffsetDateTime, OffsetDateTime)>,
    /// New provider-side status.
    pub grant: Option<GrantStatus>,
    /// Close (or reopen) a break-glass post-incident review.
    pub post_review_closed: Option<bool>,
    /// Drop the reconciler's lease on this request.
    pub release_lease: bool,
    /// Audit events recorded in the same transaction, in order.
    pub audit: Vec<AuditDraft>,
}

impl Change {
    /// Applies the row fields of this change to `r` (reviews, lease and audit
    /// are written separately by each store).
    pub fn apply_to(&self, r: &mut Request) {
        if let Some(state) = self.state {
            r.state = state;
        }
        if let Some((nb, na)) = self.window {
            r.not_before = Some(nb);
            r.not_after = Some(na);
        }
        if let Some(grant) = &self.grant {
            r.grant = grant.clone();
        }
        if let Some(closed) = self.post_review_closed {
            r.post_review_closed = closed;
        }
    }

    /// Whether the change writes nothing.
    pub fn is_empty(&self) -> bool {
        self.state.is_none()
            && self.review.is_none()
            && self.window.is_none()
            && self.grant.is_none()
            && self.post_review_closed.is_none()
            && !self.release_lease
            && self.audit.is_empty()
    }
}

/// Filters for listing requests; all set fields must hold.
#[derive(Debug, Clone, Default)]
pub struct RequestFilter {
    pub state: Option<RequestState>,
    pub requester: Option<UserName>,
    /// Only requests for these entitlements (used for reviewer queues).
    pub entitlements: Option<Vec<String>>,
    /// Only break-glass requests whose post-incident review is still open (any state).
    pub open_post_review: bool,
    /// Only requests this principal may read: made by `user`, or for one of
    /// `entitlements` (those they may review).
    pub visible_to: Option<(UserName, Vec<String>)>,
    /// Only requests listed after this one in the order below (a page cursor:
    /// its `created_at` and id).
    pub after: Option<(OffsetDateTime, RequestId)>,
    /// Newest first (ties by id), at most this many (capped at 1000).
    pub limit: u32,
}

/// A stored API token (only the SHA-256 of the secret is kept).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRecord {
    /// SHA-256 of the token secret.
    pub hash: [u8; 32],
    pub user: UserName,
    pub groups: Vec<GroupName>,
    pub admin: bool,
    pub created_by: String,
    pub created_at: OffsetDateTime,
    pub expires_at: OffsetDateTime,
    pub revoked: bool,
    /// The login behind it used multi-factor authentication (OIDC `amr`/`acr`).
    pub mfa: bool,
    /// The token a web session was started from: revoking that one ends this one too.
    pub parent: Option<[u8; 32]>,
    /// Last time it authenticated a call (recorded at most once a minute).
    pub last_used_at: Option<OffsetDateTime>,
}

impl TokenRecord {
    /// The first 8 hex digits of the hash: how tokens are named in lists, audit events and `token revoke`.
    pub fn prefix(&self) -> String {
        self.hash[..4].iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// The storage boundary. Implementations are synchronous; async callers use
/// `spawn_blocking`. Runs of the tool proxy are in the [`RunStore`] part.
pub trait Store: RunStore + NotifyStore + AccessStore + SessionStore + Send + Sync {
    /// Stores a new request and its audit events atomically.
    fn create_request(
        &self,
        request: &Request,
        lapses_at: OffsetDateTime,
        audit: &[AuditDraft],
        now: OffsetDateTime,
    ) -> StoreResult<()>;

    /// One request with its reviews.
    fn get_request(&self, id: &RequestId) -> StoreResult<Option<Request>>;

    /// Requests matching `filter`, newest first.
    fn list_requests(&self, filter: &RequestFilter) -> StoreResult<Vec<Request>>;

    /// Locks the request, lets `decide` look at it and return a change, and
    /// writes the change and its audit events in the same transaction. A
    /// rejection from `decide` writes nothing and is returned as `Rejected`.
    fn update_request(
        &self,
        id: &RequestId,
        now: OffsetDateTime,
        decide: &mut dyn FnMut(&Request) -> Result<Change, airlock_core::Error>,
    ) -> StoreResult<Request>;

    /// Claims up to `limit` requests that need background work now and are not
    /// leased by someone else: approved+applying (apply), active past
    /// `not_after` (expire), removing (remove), pending past their approval
    /// window (lapse). Claimed rows are leased to `owner` until `now + lease`.
    fn claim_work(
        &self,
        now: OffsetDateTime,
        owner: &str,
        lease: time::Duration,
        limit: u32,
    ) -> StoreResult<Vec<Request>>;

    /// Earliest time some request will need background work (for sleeping).
    fn next_due(&self) -> StoreResult<Option<OffsetDateTime>>;

    /// Appends audit events that are not tied to a request change (drift, tokens).
    fn append_audit(&self, audit: &[AuditDraft], now: OffsetDateTime) -> StoreResult<()>;

    /// Events with `seq > since`, oldest first, at most `limit`.
    fn audit_events(&self, since: u64, limit: u32) -> StoreResult<Vec<SealedEvent>>;

    /// Streams every event in sequence order to `visit` (`seq, body, hash`);
    /// stops early when `visit` returns false.
    // The closure type is the contract; a named alias would only hide it.
    #[allow(clippy::type_complexity)]
    fn audit_scan(&self, visit: &mut dyn FnMut(u64, &[u8], &[u8]) -> bool) -> StoreResult<()>;

    /// All signed checkpoints.
    fn audit_checkpoints(&self) -> StoreResult<Vec<Checkpoint>>;

    /// The chain head's sequence number as the store records it.
    fn audit_head(&self) -> StoreResult<Option<u64>>;

    /// The newest signed tree head (a checkpoint with a note).
    fn audit_latest_checkpoint(&self) -> StoreResult<Option<Checkpoint>>;

    /// Signed tree heads of size `> after`, oldest first, at most `limit`.
    fn audit_checkpoints_after(&self, after: u64, limit: u32) -> StoreResult<Vec<Checkpoint>>;

    /// Signs a tree head for the current chain head if no checkpoint covers it
    /// yet (the server's once-a-second task). Serialised with appenders by the
    /// head lock and idempotent: a replica that finds the head signed does
    /// nothing; `None` also without a signer or with an empty chain.
    fn audit_sign_head(&self, now: OffsetDateTime) -> StoreResult<Option<Checkpoint>>;

    /// Stores a token and its audit event atomically.
    fn insert_token(
        &self,
        token: &TokenRecord,
        audit: &AuditDraft,
        now: OffsetDateTime,
    ) -> StoreResult<()>;

    /// Looks a token up by the hash of its secret.
    fn find_token(&self, hash: &[u8; 32]) -> StoreResult<Option<TokenRecord>>;

    /// Marks a token revoked (logout) with its audit event, and with it every
    /// web session started from it; false if unknown or already revoked.
    fn revoke_token(
        &self,
        hash: &[u8; 32],
        audit: &AuditDraft,
        now: OffsetDateTime,
    ) -> StoreResult<bool>;

    /// Request counts per state (for metrics).
    fn count_by_state(&self) -> StoreResult<Vec<(RequestState, u64)>>;

    /// Break-glass requests whose post-incident review is not closed yet (for metrics).
    fn count_open_post_reviews(&self) -> StoreResult<u64>;

    /// Active grants whose `not_after` is before `before` (for metrics: access
    /// outliving its window means the reconciler is stuck or behind).
    fn count_overdue_grants(&self, before: OffsetDateTime) -> StoreResult<u64>;

    /// Allocates a unique certificate serial for a grant, records it with the
    /// certificate's end of validity, and appends `audit(serial)` in the same
    /// transaction. Serials start at 1 and never repeat.
    fn issue_certificate(
        &self,
        cert: &CertificateRecord,
        audit: &mut dyn FnMut(u64) -> AuditDraft,
        now: OffsetDateTime,
    ) -> StoreResult<u64>;

    /// Serials of certificates issued by `provider` that must be refused now:
    /// their request is no longer active and they are still valid at `now`.
    fn revoked_certificates(&self, provider: &str, now: OffsetDateTime) -> StoreResult<Vec<u64>>;

    /// Cheap liveness check of the database.
    fn ping(&self) -> StoreResult<()>;
}

/// A certificate minted for a grant (the serial is allocated by the store).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateRecord {
    /// The provider that signed it.
    pub provider: String,
    /// The grant's request.
    pub request_id: RequestId,
    /// The certificate's key id.
    pub key_id: String,
    /// End of validity (the grant's `not_after`).
    pub valid_before: OffsetDateTime,
}

/// Opens the store named by `url` (`sqlite://PATH` or `postgres://...`) and migrates it.
pub fn open(url: &str, signer: Option<CheckpointSigner>) -> StoreResult<Arc<dyn Store>> {
    if let Some(path) = url.strip_prefix("sqlite://") {
        Ok(Arc::new(SqliteStore::open(path, signer)?))
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(Arc::new(PgStore::open(url, signer)?))
    } else {
        Err(StoreError::Unavailable(format!(
            "database URL must start with sqlite:// or postgres:// (got `{}`)",
            url.split(':').next().unwrap_or("")
        )))
    }
}
