//! The tool proxy: `airlock exec` and catalog operations run on the server,
//! checked against rules and Cedar, rate-limited and approved through the
//! store, executed without a shell in their own process group, streamed back
//! live and recorded (transcript hash in the audit log).
//!
//! Exactly-once: a run moves `approved → running` only inside a store
//! transaction that locks its row and records the executor's lease. A run
//! found `running` with an expired lease (its server died) is marked failed,
//! never re-run: the command may have had effects, so a person decides.

pub mod background;
pub mod create;
pub mod execution;
pub mod executor;
pub mod frames;
pub mod hub;
pub mod operation;
pub mod review;

use std::time::Duration;

use airlock_core::run::{Run, RunId, RUN_ID_PREFIX};
use airlock_core::Principal;
use rand::Rng;
use time::OffsetDateTime;

pub use hub::Hub;

/// How long an executor's hold on a running run lasts unless renewed.
pub const LEASE: Duration = Duration::from_secs(30);
/// How often a running run's lease is renewed (and a cancel request noticed).
pub const RENEW_EVERY: Duration = Duration::from_secs(5);
/// An approved run whose requester waits to stream it is started by the
/// server anyway after this long (the requester may have gone away).
pub const ATTACH_GRACE: Duration = Duration::from_secs(60);

/// A new run id: `run_` and 16 characters of lowercase base32.
pub fn new_run_id() -> RunId {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz234567";
    let mut rng = rand::thread_rng();
    let s: String = (0..16)
        .map(|_| ALPHABET[rng.gen_range(0..32)] as char)
        .collect();
    RunId::parse(&format!("{RUN_ID_PREFIX}{s}")).expect("generated ids are valid")
}

/// The audit subject of a run.
pub fn subject(id: &RunId) -> String {
    format!("run:{id}")
}

fn lease_until(now: OffsetDateTime) -> OffsetDateTime {
    now + time::Duration::seconds(LEASE.as_secs() as i64)
}

/// Who may read a run's output: its requester, its reviewers, admins.
pub fn may_read_output(who: &Principal, run: &Run) -> bool {
    who.admin || run.requester == who.name || run.approvals.reviewers.iter().any(|r| who.matches(r))
}

/// When a background executor may start a run approved at `at`.
fn start_after(at: OffsetDateTime, detached: bool) -> OffsetDateTime {
    if detached {
        at
    } else {
        at + time::Duration::seconds(ATTACH_GRACE.as_secs() as i64)
    }
}

fn empty_transcript() -> airlock_store::Transcript {
    airlock_store::Transcript {
        bytes: vec![],
        sha256: hex::encode(<sha2::Sha256 as sha2::Digest>::digest(b"")),
        output_bytes: 0,
        truncated: false,
    }
}

/// `GET /api/v1/runs`: one page of the runs `who` may read; with `to_review`,
/// the pending runs that wait for their review.
pub async fn list(
    app: &std::sync::Arc<crate::Service>,
    who: &Principal,
    q: &crate::page::ListParams,
) -> Result<crate::page::Page<Run>, crate::ServiceError> {
    let mut filter = airlock_store::RunFilter {
        limit: q.limit,
        state: q.state()?,
        requester: q.requester(who),
        ..Default::default()
    };
    if q.to_review {
        filter.state = Some(airlock_core::run::RunState::Pending);
        filter.limit = 1000;
    }
    filter.after = q.after(RunId::parse)?;
    let limit = filter.limit;
    let mut items = app.db_untracked(move |s| s.list_runs(&filter)).await?;
    // The cursor follows the store's page, before the per-reader filter below
    // may shorten it: a short page is not the end.
    let next = crate::page::next_cursor(
        items.len(),
        limit,
        items.last().map(|r| (r.created_at, r.id.as_str())),
    );
    items.retain(|r| crate::visibility::may_read_run(app, who, r));
    if q.to_review {
        items.retain(|r| r.approvals.awaits_review_by(who, r));
    }
    Ok(crate::page::Page { items, next })
}
