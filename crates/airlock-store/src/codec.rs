//! Row encoding and audit sealing shared by both stores, so SQLite and
//! PostgreSQL decode rows and extend the chain identically. No SQL lives here.
//!
//! Timestamps are stored as unix microseconds (signed 64-bit). Writing
//! truncates toward the past to whole microseconds, so a value read back equals
//! `t - (t mod 1µs)`; callers that compare must truncate the same way.

use airlock_core::audit_chain::{
    seal, AuditDraft, Checkpoint, CheckpointSigner, SealedEvent, GENESIS,
};
use airlock_core::merkle::Frontier;
use airlock_core::request::{
    GrantPhase, GrantStatus, Request, RequestId, RequestState, Review, ReviewDecision,
};
use airlock_core::{EntitlementName, GroupName, Span, UserName};
use time::OffsetDateTime;

use crate::{StoreError, StoreResult, TokenRecord};

/// Columns of `requests` in the order `RequestRow` expects them.
pub(crate) const REQUEST_COLUMNS: &str = "id, entitlement, requester, reason, state, requested_duration, \
     not_before, not_after, breakglass, post_review_closed, grant_phase, grant_attempts, grant_last_error, \
     grant_next_attempt_at, created_at, updated_at, secret_salt";

/// Columns of `tokens` in the order `TokenRow` expects them.
pub(crate) const TOKEN_COLUMNS: &str =
    "hash, user_name, groups, admin, created_by, created_at, expires_at, revoked, mfa, parent, last_used_at";

/// Rows a caller may ask for when it passes 0, and the most it may ask for.
pub(crate) const DEFAULT_LIMIT: u32 = 100;
pub(crate) const MAX_LIST_LIMIT: u32 = 1000;
pub(crate) const MAX_AUDIT_PAGE: u32 = 10_000;
/// Tokens are small and `token revoke --user` takes them all in one page.
pub(crate) const MAX_TOKEN_PAGE: u32 = 10_000;

/// `limit` with 0 meaning the default and anything above `cap` clamped.
pub(crate) fn effective_limit(limit: u32, cap: u32) -> i64 {
    i64::from(if limit == 0 {
        DEFAULT_LIMIT.min(cap)
    } else {
        limit.min(cap)
    })
}

/// Unix microseconds, truncated toward the past.
pub(crate) fn micros(t: OffsetDateTime) -> i64 {
    // i128 -> i64 cannot overflow: `time` limits years to ±9999 (~3e17 µs).
    t.unix_timestamp_nanos().div_euclid(1000) as i64
}

/// Inverse of [`micros`], in UTC.
pub(crate) fn from_micros(us: i64, what: &str) -> StoreResult<OffsetDateTime> {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(us) * 1000)
        .map_err(|_| StoreError::Corrupt(format!("{what} timestamp {us} is out of range")))
}

fn opt_from_micros(us: Option<i64>, what: &str) -> StoreResult<Option<OffsetDateTime>> {
    us.map(|v| from_micros(v, what)).transpose()
}

fn corrupt(what: &str, value: &str, why: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!(
        "{what} `{}`: {why}",
        value.chars().take(60).collect::<String>()
    ))
}

/// The refusal for an id that has no row.
pub(crate) fn not_found(id: &RequestId) -> StoreError {
    StoreError::Rejected(airlock_core::Error::NotFound {
        what: format!("request `{id}`"),
    })
}

/// Parses a stored state name.
pub(crate) fn parse_state(s: &str) -> StoreResult<RequestState> {
    s.parse().map_err(|e| corrupt("request state", s, e))
}

/// A `requests` row as read, before validation.
pub(crate) struct RequestRow {
    pub id: String,
    pub entitlement: String,
    pub requester: String,
    pub reason: String,
    pub state: String,
    pub requested_duration: i64,
    pub not_before: Option<i64>,
    pub not_after: Option<i64>,
    pub breakglass: bool,
    pub post_review_closed: bool,
    pub grant_phase: String,
    pub grant_attempts: i64,
    pub grant_last_error: Option<String>,
    pub grant_next_attempt_at: Option<i64>,
    pub created_at: i64,
    pub updated_at: i64,
    pub secret_salt: Vec<u8>,
}

impl RequestRow {
    /// Validates the row into a domain request.
    pub fn decode(self, reviews: Vec<Review>) -> StoreResult<Request> {
        let id = RequestId::parse(&self.id).map_err(|e| corrupt("request id", &self.id, e))?;
        let what = |field: &str| format!("request {id} {field}");
        let requested_duration = u64::try_from(self.requested_duration)
            .ok()
            .and_then(Span::from_secs)
            .ok_or_else(|| {
                StoreError::Corrupt(format!(
                    "{} {} is not a valid span",
                    what("duration"),
                    self.requested_duration
                ))
            })?;
        let phase = GrantPhase::parse(&self.grant_phase)
            .ok_or_else(|| corrupt(&what("grant phase"), &self.grant_phase, "unknown"))?;
        let attempts = u32::try_from(self.grant_attempts).map_err(|_| {
            StoreError::Corrupt(format!(
                "{} {} is out of range",
                what("grant attempts"),
                self.grant_attempts
            ))
        })?;
        Ok(Request {
            entitlement: EntitlementName::parse(&self.entitlement)
                .map_err(|e| corrupt(&what("entitlement"), &self.entitlement, e))?,
            requester: UserName::parse(&self.requester)
                .map_err(|e| corrupt(&what("requester"), &self.requester, e))?,
            reason: self.reason,
            state: parse_state(&self.state)?,
            requested_duration,
            not_before: opt_from_micros(self.not_before, &what("not_before"))?,
            not_after: opt_from_micros(self.not_after, &what("not_after"))?,
            breakglass: self.breakglass,
            post_review_closed: self.post_review_closed,
            reviews,
            grant: GrantStatus {
                phase,
                attempts,
                last_error: self.grant_last_error,
                next_attempt_at: opt_from_micros(
                    self.grant_next_attempt_at,
                    &what("grant_next_attempt_at"),
                )?,
            },
            created_at: from_micros(self.created_at, &what("created_at"))?,
            updated_at: from_micros(self.updated_at, &what("updated_at"))?,
            secret_salt: self.secret_salt,
            id,
        })
    }
}

/// A `reviews` row as read.
pub(crate) struct ReviewRow {
    pub reviewer: String,
    pub decision: String,
    pub comment: Option<String>,
    pub at: i64,
}

impl ReviewRow {
    /// Validates the row into a domain review.
    pub fn decode(self) -> StoreResult<Review> {
        let decision = ReviewDecision::parse(&self.decision)
            .map_err(|_| corrupt("review decision", &self.decision, "unknown"))?;
        Ok(Review {
            reviewer: UserName::parse(&self.reviewer)
                .map_err(|e| corrupt("reviewer", &self.reviewer, e))?,
            decision,
            comment: self.comment,
            at: from_micros(self.at, "review")?,
        })
    }
}

/// A `tokens` row as read.
pub(crate) struct TokenRow {
    pub hash: Vec<u8>,
    pub user: String,
    pub groups: String,
    pub admin: bool,
    pub created_by: String,
    pub created_at: i64,
    pub expires_at: i64,
    pub revoked: bool,
    pub mfa: bool,
    pub parent: Option<Vec<u8>>,
    pub last_used_at: Option<i64>,
}

impl TokenRow {
    /// Validates the row into a token record.
    pub fn decode(self) -> StoreResult<TokenRecord> {
        let names: Vec<String> = serde_json::from_str(&self.groups)
            .map_err(|e| corrupt("token groups", &self.groups, e))?;
        let groups = names
            .iter()
            .map(|g| GroupName::parse(g).map_err(|e| corrupt("token group", g, e)))
            .collect::<StoreResult<_>>()?;
        Ok(TokenRecord {
            hash: hash32(&self.hash, "token hash")?,
            user: UserName::parse(&self.user).map_err(|e| corrupt("token user", &self.user, e))?,
            groups,
            admin: self.admin,
            created_by: self.created_by,
            created_at: from_micros(self.created_at, "token created_at")?,
            expires_at: from_micros(self.expires_at, "token expires_at")?,
            revoked: self.revoked,
            mfa: self.mfa,
            parent: self
                .parent
                .map(|p| hash32(&p, "token parent"))
                .transpose()?,
            last_used_at: self
                .last_used_at
                .map(|t| from_micros(t, "token last_used_at"))
                .transpose()?,
        })
    }
}

/// A user name as stored.
pub(crate) fn user_name(s: &str) -> StoreResult<UserName> {
    UserName::parse(s).map_err(|e| corrupt("user name", s, e))
}

/// A `locks` row as read.
pub(crate) struct LockRow {
    pub kind: String,
    pub name: String,
    pub reason: String,
    pub created_by: String,
    pub created_at: i64,
    pub expires_at: Option<i64>,
}

impl LockRow {
    /// Validates the row into a lock.
    pub fn decode(self) -> StoreResult<crate::Lock> {
        Ok(crate::Lock {
            kind: crate::LockKind::parse(&self.kind)
                .map_err(|e| corrupt("lock kind", &self.kind, e))?,
            name: self.name,
            reason: self.reason,
            created_by: self.created_by,
            created_at: from_micros(self.created_at, "lock created_at")?,
            expires_at: self
                .expires_at
                .map(|t| from_micros(t, "lock expires_at"))
                .transpose()?,
        })
    }
}

/// A token's revocation event, noting how many web sessions ended with it.
pub(crate) fn with_sessions_ended(audit: &AuditDraft, sessions: usize) -> AuditDraft {
    let mut audit = audit.clone();
    if sessions > 0 {
        if let Some(obj) = audit.data.as_object_mut() {
            obj.insert("sessions_ended".into(), sessions.into());
        }
    }
    audit
}

/// Token groups as stored (a JSON array of names).
pub(crate) fn encode_groups(groups: &[GroupName]) -> String {
    let names: Vec<&str> = groups.iter().map(|g| g.as_str()).collect();
    serde_json::Value::from(names).to_string()
}

/// A stored 32-byte hash.
pub(crate) fn hash32(bytes: &[u8], what: &str) -> StoreResult<[u8; 32]> {
    bytes
        .try_into()
        .map_err(|_| StoreError::Corrupt(format!("{what} has {} bytes, expected 32", bytes.len())))
}

/// A stored 64-byte signature.
pub(crate) fn sig64(bytes: &[u8], seq: u64) -> StoreResult<[u8; 64]> {
    bytes.try_into().map_err(|_| {
        StoreError::Corrupt(format!(
            "checkpoint {seq} signature has {} bytes, expected 64",
            bytes.len()
        ))
    })
}

/// A stored sequence number.
pub(crate) fn seq_u64(v: i64, what: &str) -> StoreResult<u64> {
    u64::try_from(v)
        .map_err(|_| StoreError::Corrupt(format!("{what} sequence number {v} is negative")))
}

/// Events and checkpoints to insert, and the head after them.
pub(crate) struct Sealed {
    pub events: Vec<SealedEvent>,
    pub checkpoints: Vec<Checkpoint>,
    pub head_seq: u64,
    pub head_hash: [u8; 32],
    /// The Merkle frontier after the new events (stored with the head).
    pub frontier: Frontier,
}

/// The chain head as stored: sequence number, chain hash and Merkle frontier.
pub(crate) struct Head {
    pub seq: u64,
    pub hash: [u8; 32],
    pub frontier: Frontier,
}

impl Head {
    /// Decodes a head row; a NULL frontier (a head written before the
    /// transparency log) is rebuilt by `rebuild` from the stored events, once.
    pub fn decode(
        seq: i64,
        hash: &[u8],
        frontier: Option<&[u8]>,
        rebuild: &mut dyn FnMut() -> StoreResult<Frontier>,
    ) -> StoreResult<Head> {
        let seq = seq_u64(seq, "audit head")?;
        let frontier = match frontier {
            Some(b) => Frontier::decode(seq, b)
                .map_err(|e| StoreError::Corrupt(format!("audit head frontier: {e}")))?,
            None if seq == 0 => Frontier::new(),
            None => rebuild()?,
        };
        if frontier.size() != seq {
            return Err(StoreError::Corrupt(format!(
                "audit head is at {seq} but the stored events make a tree of {}",
                frontier.size()
            )));
        }
        Ok(Head {
            seq,
            hash: hash32(hash, "audit head hash")?,
            frontier,
        })
    }
}

/// Seals `drafts` after `head` (none means an empty chain), extending the
/// Merkle frontier and signing a tree head at every due sequence number.
pub(crate) fn seal_drafts(
    head: Option<Head>,
    now: OffsetDateTime,
    drafts: &[AuditDraft],
    signer: Option<&CheckpointSigner>,
) -> Sealed {
    let (mut seq, mut prev, mut frontier) = match head {
        Some(h) => (h.seq, h.hash, h.frontier),
        None => (0, GENESIS, Frontier::new()),
    };
    let mut events = Vec::with_capacity(drafts.len());
    let mut checkpoints = Vec::new();
    for draft in drafts {
        seq += 1;
        let event = seal(&prev, seq, now, draft);
        prev = event.hash;
        frontier.push_body(&event.body);
        if let Some(s) = signer.filter(|s| s.due(seq)) {
            checkpoints.push(s.sign_head(seq, &prev, &frontier.root(), now));
        }
        events.push(event);
    }
    Sealed {
        events,
        checkpoints,
        head_seq: seq,
        head_hash: prev,
        frontier,
    }
}

/// The four kinds of due work, each a condition its own index answers
/// (`$1` = now) and the column it is due by: apply (approved, grant
/// applying, retry time reached), expire (active past `not_after`), remove
/// (grant removing, retry time reached), lapse (pending past `lapses_at`).
pub(crate) const DUE_BRANCHES: [(&str, &str); 4] = [
    (
        "state = 'approved' AND grant_phase = 'applying' AND (grant_next_attempt_at IS NULL OR grant_next_attempt_at <= $1)",
        "COALESCE(grant_next_attempt_at, updated_at)",
    ),
    ("state = 'active' AND not_after <= $1", "not_after"),
    (
        "grant_phase = 'removing' AND (grant_next_attempt_at IS NULL OR grant_next_attempt_at <= $1)",
        "COALESCE(grant_next_attempt_at, updated_at)",
    ),
    ("state = 'pending' AND lapses_at <= $1", "lapses_at"),
];

/// The claim: up to `$4` due rows no one holds, earliest due first within
/// each kind, handed out oldest first, leased to `$2` until `$3`. Each kind
/// is its own index range scan, so the cost follows the due rows, not the
/// table (100,000 active grants that are not due are never read).
/// SKIP LOCKED: rows another replica is claiming right now are left to it,
/// and a row it already claimed fails the lease test once its commit is seen.
/// MATERIALIZED: the locking subqueries run exactly once, so LIMIT holds.
pub(crate) fn claim_sql(columns: &str) -> String {
    let branches: Vec<String> = DUE_BRANCHES
        .iter()
        .enumerate()
        .map(|(i, (cond, by))| {
            format!(
                "SELECT id, created_at FROM (SELECT id, created_at FROM requests \
                 WHERE {cond} AND (lease_until IS NULL OR lease_until <= $1) \
                 ORDER BY {by} LIMIT $4 FOR UPDATE SKIP LOCKED) AS due{i}"
            )
        })
        .collect();
    format!(
        "WITH due AS MATERIALIZED ({}), \
         pick AS MATERIALIZED (SELECT DISTINCT id, created_at FROM due ORDER BY created_at, id LIMIT $4) \
         UPDATE requests SET lease_owner = $2, lease_until = $3 WHERE id IN (SELECT id FROM pick) \
         RETURNING {columns}",
        branches.join(" UNION ALL ")
    )
}

/// Earliest deadline over all rows; a leased row is not due before its lease
/// ends, so a crashed replica's work is picked up when the lease runs out.
/// Rows whose retry time is unset count from their last update (due now).
/// Unleased rows: the minimum of each kind, read from its index; leased
/// rows (few: work in flight) through the partial index on `lease_until`.
pub(crate) fn next_due_sql() -> String {
    let mut parts = Vec::new();
    for (cond, by) in DUE_BRANCHES {
        let cond = cond
            .split(" AND ")
            .filter(|c| !c.contains("$1") && !c.starts_with("(grant_next_attempt_at"))
            .collect::<Vec<_>>()
            .join(" AND ");
        parts.push(format!(
            "SELECT MIN({by}) AS due FROM requests WHERE {cond} AND {by} IS NOT NULL AND lease_until IS NULL"
        ));
        parts.push(format!(
            "SELECT MIN(CASE WHEN lease_until > {by} THEN lease_until ELSE {by} END) AS due \
             FROM requests WHERE lease_until IS NOT NULL AND {cond} AND {by} IS NOT NULL"
        ));
    }
    format!("SELECT MIN(due) FROM ({}) AS d", parts.join(" UNION ALL "))
}

/// Every state with its count (zero included, so metrics gauges drop to 0).
pub(crate) fn counts(rows: Vec<(String, i64)>) -> StoreResult<Vec<(RequestState, u64)>> {
    let mut out: Vec<(RequestState, u64)> = RequestState::ALL.iter().map(|s| (*s, 0)).collect();
    for (state, n) in rows {
        let state = parse_state(&state)?;
        if let Some(slot) = out.iter_mut().find(|(s, _)| *s == state) {
            slot.1 = u64::try_from(n).unwrap_or(0);
        }
    }
    Ok(out)
}
