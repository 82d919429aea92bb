//! Gateway sessions and their recordings (query logs, terminal casts), kept
//! in the store so any replica can list, serve and end them. Part of
//! [`Store`](crate::Store).

use airlock_core::audit_chain::AuditDraft;
use airlock_core::request::{RequestId, RequestState};
use airlock_core::session::{EndReason, Session, SessionId};
use time::OffsetDateTime;

use crate::StoreResult;

/// Largest recording chunk accepted (the gateway flushes well below this).
pub const MAX_CHUNK: usize = 1 << 20;

/// Which sessions [`SessionStore::list_sessions`] returns, newest first.
#[derive(Debug, Clone, Default)]
pub struct SessionFilter {
    /// Only this request's sessions.
    pub request: Option<RequestId>,
    /// Only sessions of this user or of these entitlements (what a
    /// non-auditor may read); `None` = all.
    pub scope: Option<(airlock_core::UserName, Vec<String>)>,
    /// Only sessions held by this replica.
    pub replica: Option<String>,
    /// Only sessions still open.
    pub open: bool,
    /// At most this many (0 = 100, capped at 1,000).
    pub limit: u32,
}

/// How a session ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionEnd {
    pub reason: EndReason,
    pub bytes_up: u64,
    pub bytes_down: u64,
    /// SHA-256 (hex) of the recording as stored.
    pub recording_sha256: String,
}

/// What the holder of an open session must know each watch tick.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionWatch {
    pub id: SessionId,
    /// Set by `airlock session terminate` on any replica.
    pub terminate_requested: Option<String>,
    /// The grant's request state now.
    pub request_state: RequestState,
}

/// Gateway sessions; part of [`Store`](crate::Store).
pub trait SessionStore {
    /// Records a new open session with its `session.started` event.
    fn start_session(
        &self,
        session: &Session,
        audit: &AuditDraft,
        now: OffsetDateTime,
    ) -> StoreResult<()>;

    /// Stores recording chunk `seq` of an open session (idempotent per seq).
    fn append_recording(&self, id: &SessionId, seq: u64, body: &[u8]) -> StoreResult<()>;

    /// Reports, for each of these sessions, the termination requests and the
    /// state of its grant; with `lease_until`, first extends their leases.
    fn watch_sessions(
        &self,
        ids: &[String],
        lease_until: Option<OffsetDateTime>,
    ) -> StoreResult<Vec<SessionWatch>>;

    /// Ends an open session with its `session.ended` event; false (nothing
    /// written) when it had ended already.
    fn end_session(
        &self,
        id: &SessionId,
        end: &SessionEnd,
        audit: &AuditDraft,
        now: OffsetDateTime,
    ) -> StoreResult<bool>;

    /// One session.
    fn get_session(&self, id: &SessionId) -> StoreResult<Option<Session>>;

    /// Sessions matching `filter`, newest first.
    fn list_sessions(&self, filter: &SessionFilter) -> StoreResult<Vec<Session>>;

    /// The whole recording, chunks in order (empty when none was written).
    fn session_recording(&self, id: &SessionId) -> StoreResult<Vec<u8>>;

    /// Asks the holder of an open session to end it, with the audit event;
    /// false (nothing written) when it is not open.
    fn request_session_terminate(
        &self,
        id: &SessionId,
        by: &str,
        audit: &AuditDraft,
        now: OffsetDateTime,
    ) -> StoreResult<bool>;

    /// Open sessions whose lease ran out before `now` (their replica died).
    fn abandoned_sessions(&self, now: OffsetDateTime, limit: u32) -> StoreResult<Vec<Session>>;
}
