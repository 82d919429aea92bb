//! Storage of tool-proxy runs: the run rows (a JSON document plus the columns
//! queries filter on), their reviews, transcripts, and rate-limit events.
//! Like requests, every change is written with its audit events in one
//! transaction; rate-limit counting and the insert it allows are serialised
//! per key (SQLite's write lock, a PostgreSQL advisory transaction lock).

use airlock_core::audit_chain::AuditDraft;
use airlock_core::rate::Rate;
use airlock_core::request::Review;
use airlock_core::run::{DryRun, Run, RunId, RunState};
use airlock_core::UserName;
use time::OffsetDateTime;

use crate::codec::{from_micros, ReviewRow};
use crate::{StoreError, StoreResult};

/// A rate limit to check (and count against) when creating a run.
#[derive(Debug, Clone)]
pub struct RateCheck {
    /// The principal the limit is per.
    pub principal: UserName,
    /// The rule or operation the limit is per (`tool:NAME:[...]`, `operation:NAME`).
    pub key: String,
    /// N per window.
    pub rate: Rate,
}

/// What `create_run` writes, decided while the rate-limit key is locked.
#[derive(Debug, Clone)]
pub struct NewRun {
    /// The run as it is stored (any initial state).
    pub run: Run,
    /// For a run created directly in `running`: the executor's lease `(owner, until)`.
    pub lease: Option<(String, OffsetDateTime)>,
    /// When approved, a background executor may start it from this time on
    /// (`None`: only its requester starts it, through the API).
    pub start_after: Option<OffsetDateTime>,
    /// Count this run as one event of the rate limit that was checked.
    pub count: bool,
    /// Audit events recorded in the same transaction, in order.
    pub audit: Vec<AuditDraft>,
}

/// What [`RunStore::record_rate_event`] writes, decided while the pair is locked.
#[derive(Debug, Clone)]
pub struct RateEvent {
    /// Count one event of the limit (false: refused, only the audit is written).
    pub count: bool,
    /// Audit events recorded in the same transaction, in order.
    pub audit: Vec<AuditDraft>,
}

/// A finished run's output as kept: capped, with a marker if cut.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transcript {
    /// The stored bytes (stdout and stderr as they arrived).
    pub bytes: Vec<u8>,
    /// SHA-256 of `bytes`, lowercase hex.
    pub sha256: String,
    /// What the tool wrote in total.
    pub output_bytes: u64,
    /// Whether `bytes` was cut at the cap.
    pub truncated: bool,
}

/// How to change a run's executor lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseChange {
    /// Held by `owner` until the given time.
    Hold(String, OffsetDateTime),
    /// Nobody holds it.
    Release,
}

/// A change to one run, decided by domain code while the row is locked.
#[derive(Debug, Clone, Default)]
pub struct RunChange {
    pub state: Option<RunState>,
    /// A review to append.
    pub review: Option<Review>,
    pub started_at: Option<OffsetDateTime>,
    pub finished_at: Option<OffsetDateTime>,
    pub exit_code: Option<i32>,
    pub error: Option<String>,
    /// The transcript (also sets `transcript_*` and `output_bytes` on the run).
    pub transcript: Option<Transcript>,
    /// An operation's dry run, once it ran.
    pub dry_run: Option<DryRun>,
    pub lease: Option<LeaseChange>,
    /// Set when a run is approved: when a background executor may start it.
    pub start_after: Option<OffsetDateTime>,
    /// Who asked to cancel a running run (the executor holding it kills it).
    pub cancel_requested: Option<String>,
    /// Audit events recorded in the same transaction, in order.
    pub audit: Vec<AuditDraft>,
}

impl RunChange {
    /// Whether the change writes nothing.
    pub fn is_empty(&self) -> bool {
        self.state.is_none()
            && self.review.is_none()
            && self.started_at.is_none()
            && self.finished_at.is_none()
            && self.exit_code.is_none()
            && self.error.is_none()
            && self.transcript.is_none()
            && self.dry_run.is_none()
            && self.lease.is_none()
            && self.start_after.is_none()
            && self.cancel_requested.is_none()
            && self.audit.is_empty()
    }

    /// Applies the document fields of this change to `r` (reviews, lease,
    /// transcript body and audit are written separately by each store).
    pub fn apply_to(&self, r: &mut Run, now: OffsetDateTime) {
        if let Some(s) = self.state {
            r.state = s;
        }
        if let Some(t) = self.started_at {
            r.started_at = Some(t);
        }
        if let Some(t) = self.finished_at {
            r.finished_at = Some(t);
        }
        if let Some(c) = self.exit_code {
            r.exit_code = Some(c);
        }
        if let Some(e) = &self.error {
            r.error = Some(e.clone());
        }
        if let Some(t) = &self.transcript {
            r.transcript_sha256 = Some(t.sha256.clone());
            r.transcript_bytes = Some(t.bytes.len() as u64);
            r.output_bytes = Some(t.output_bytes);
            r.transcript_truncated = t.truncated;
        }
        if let Some(d) = &self.dry_run {
            r.dry_run = Some(d.clone());
        }
        if let Some(review) = &self.review {
            r.reviews.push(review.clone());
        }
        r.updated_at = now;
    }
}

/// The store-side bookkeeping of a run that its document does not show.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunLease {
    /// The executor holding a running run.
    pub owner: Option<String>,
    /// When that hold ends unless renewed.
    pub until: Option<OffsetDateTime>,
    /// When a background executor may start an approved run.
    pub start_after: Option<OffsetDateTime>,
    /// Who asked to cancel.
    pub cancel_requested: Option<String>,
}

/// Filters for listing runs; all set fields must hold.
#[derive(Debug, Clone, Default)]
pub struct RunFilter {
    pub state: Option<RunState>,
    pub requester: Option<UserName>,
    /// Only runs listed after this one in the order below (a page cursor:
    /// its `created_at` and id).
    pub after: Option<(OffsetDateTime, RunId)>,
    /// Newest first (ties by id), at most this many (0 = 100, capped at 1000).
    pub limit: u32,
}

/// Storage of runs; every [`Store`](crate::Store) implements it.
pub trait RunStore {
    /// Creates a run. With `rate`, first locks the (principal, key) pair,
    /// reads the times of its events inside the window and hands them to
    /// `decide`, which returns what to write (e.g. the run, or a
    /// `rate_limited` one); the run, its counted event and its audit events
    /// are written in the same transaction. Old events of the pair are pruned.
    fn create_run(
        &self,
        rate: Option<&RateCheck>,
        now: OffsetDateTime,
        decide: &mut dyn FnMut(&[OffsetDateTime]) -> NewRun,
    ) -> StoreResult<Run>;

    /// Counts an event that creates no run (an operation's dry run) in the
    /// same accounting as [`create_run`](Self::create_run): locks the
    /// (principal, key) pair, hands the times of its events inside the window
    /// to `decide`, and writes what it returns (the event under `marker`, and
    /// the audit events) in one transaction. Returns whether it counted.
    fn record_rate_event(
        &self,
        rate: &RateCheck,
        marker: &str,
        now: OffsetDateTime,
        decide: &mut dyn FnMut(&[OffsetDateTime]) -> RateEvent,
    ) -> StoreResult<bool>;

    /// One run with its reviews.
    fn get_run(&self, id: &RunId) -> StoreResult<Option<Run>>;

    /// Runs matching `filter`, newest first.
    fn list_runs(&self, filter: &RunFilter) -> StoreResult<Vec<Run>>;

    /// Locks the run, lets `decide` look at it (and its lease) and return a
    /// change, and writes the change and its audit events in one transaction.
    /// A rejection writes nothing and is returned as `Rejected`.
    fn update_run(
        &self,
        id: &RunId,
        now: OffsetDateTime,
        decide: &mut dyn FnMut(&Run, &RunLease) -> Result<RunChange, airlock_core::Error>,
    ) -> StoreResult<Run>;

    /// Ids of runs that need background attention at `now`, oldest first:
    /// pending past `lapses_at`, approved and startable (`start_after <= now`,
    /// not leased), running with an expired lease.
    fn due_runs(&self, now: OffsetDateTime, limit: u32) -> StoreResult<Vec<RunId>>;

    /// The stored transcript of a finished run.
    fn run_transcript(&self, id: &RunId) -> StoreResult<Option<Vec<u8>>>;
}

/// Columns of `runs` in the order [`RunRow`] expects them.
pub(crate) const RUN_COLUMNS: &str =
    "id, state, doc, lease_owner, lease_until, start_after, cancel_requested";

/// A `runs` row as read.
pub(crate) struct RunRow {
    pub id: String,
    pub state: String,
    pub doc: String,
    pub lease_owner: Option<String>,
    pub lease_until: Option<i64>,
    pub start_after: Option<i64>,
    pub cancel_requested: Option<String>,
}

fn corrupt(what: &str, why: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("{what}: {why}"))
}

impl RunRow {
    /// Validates the row into a run and its lease.
    pub fn decode(self, reviews: Vec<ReviewRow>) -> StoreResult<(Run, RunLease)> {
        let mut run: Run = serde_json::from_str(&self.doc)
            .map_err(|e| corrupt(&format!("run {} document", self.id), e))?;
        if run.id.as_str() != self.id || run.state.as_str() != self.state {
            return Err(corrupt(
                &format!("run {}", self.id),
                "document does not match its row (id or state differ)",
            ));
        }
        run.reviews = reviews
            .into_iter()
            .map(ReviewRow::decode)
            .collect::<StoreResult<_>>()?;
        let lease = RunLease {
            owner: self.lease_owner,
            until: self
                .lease_until
                .map(|t| from_micros(t, "run lease"))
                .transpose()?,
            start_after: self
                .start_after
                .map(|t| from_micros(t, "run start_after"))
                .transpose()?,
            cancel_requested: self.cancel_requested,
        };
        Ok((run, lease))
    }
}

/// The stored document of a run (reviews live in their own rows).
pub(crate) fn encode_doc(run: &Run) -> StoreResult<String> {
    let mut v = serde_json::to_value(run).map_err(|e| corrupt("run document", e))?;
    if let Some(o) = v.as_object_mut() {
        o.remove("reviews");
    }
    Ok(v.to_string())
}

/// The refusal for a run id that has no row.
pub(crate) fn run_not_found(id: &RunId) -> StoreError {
    StoreError::Rejected(airlock_core::Error::NotFound {
        what: format!("run `{id}`"),
    })
}

/// Which rows `due_runs` returns (a placeholder in the caller's dialect).
pub(crate) fn due_runs_condition(now: &str) -> String {
    format!(
        "((state = 'pending' AND lapses_at <= {now}) \
         OR (state = 'approved' AND start_after IS NOT NULL AND start_after <= {now} AND (lease_until IS NULL OR lease_until <= {now})) \
         OR (state = 'running' AND lease_until IS NOT NULL AND lease_until <= {now}))"
    )
}
