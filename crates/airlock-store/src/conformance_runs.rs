//! Conformance cases for [`RunStore`](crate::RunStore), run on every store
//! with [`run_store_conformance_tests!`]: rate limits hold under concurrency,
//! an approved run is claimed exactly once, changes and audit are atomic.

use std::collections::BTreeMap;
use std::sync::{Arc, Barrier};
use std::thread;

use airlock_core::approval::ApprovalRule;
use airlock_core::audit_chain::{AuditDraft, ChainVerifier};
use airlock_core::rate::{Rate, RateDecision};
use airlock_core::request::{Review, ReviewDecision};
use airlock_core::run::{DryRun, Run, RunId, RunState, RunTransition};
use airlock_core::{OperationName, ToolName, UserName};
use time::macros::datetime;
use time::{Duration, OffsetDateTime};

use crate::conformance::MakeStore;
use crate::{
    LeaseChange, NewRun, RateCheck, RateEvent, RunChange, RunFilter, Store, StoreError, Transcript,
};

/// Expands one `#[test]` per run conformance case (same factory as
/// [`store_conformance_tests!`](crate::store_conformance_tests)).
#[macro_export]
macro_rules! run_store_conformance_tests {
    ($make:path) => {
        $crate::run_store_conformance_tests!(@cases $make;
            create_run_then_get_returns_every_field_with_its_audit,
            rate_limit_counts_per_principal_and_key_and_frees_after_the_window,
            concurrent_creates_never_exceed_the_rate_limit,
            rate_events_without_a_run_share_the_limit_with_runs,
            approved_run_is_claimed_exactly_once_under_concurrency,
            finishing_stores_the_transcript_and_its_hash_atomically,
            rejected_run_change_writes_nothing,
            run_reviews_are_unique_per_reviewer,
            due_runs_selects_lapsed_startable_and_abandoned_runs,
            list_runs_is_newest_first_and_filters,
            list_runs_pages_with_a_cursor_across_equal_times,
        );
    };
    (@cases $make:path; $($case:ident),* $(,)?) => {
        $(
            #[test]
            fn $case() {
                $crate::conformance_runs::$case(&$make);
            }
        )*
    };
}

fn t0() -> OffsetDateTime {
    datetime!(2030-01-02 03:04:05.123456 UTC)
}

fn user(s: &str) -> UserName {
    UserName::parse(s).expect("valid user")
}

fn run_id(n: u32) -> RunId {
    RunId::parse(&format!("run_{n:08}")).expect("valid run id")
}

fn sample(n: u32, state: RunState, at: OffsetDateTime) -> Run {
    Run {
        id: run_id(n),
        tool: ToolName::parse("kubectl").expect("valid"),
        argv: vec![
            "/usr/local/bin/kubectl".into(),
            "delete".into(),
            "pod".into(),
            "x; rm -rf /".into(),
        ],
        operation: None,
        params: None,
        requester: user("alice"),
        reason: "INC-1".into(),
        state,
        detached: false,
        rule: "rule 2 [\"delete\", \"pod\", \"*\"]".into(),
        approvals: ApprovalRule {
            count: 1,
            reviewers: vec!["sre".into()],
        },
        exit_code: None,
        started_at: None,
        finished_at: None,
        transcript_sha256: None,
        transcript_bytes: None,
        output_bytes: None,
        transcript_truncated: false,
        dry_run: None,
        error: None,
        next_allowed_at: None,
        lapses_at: (state == RunState::Pending).then(|| at + Duration::hours(24)),
        reviews: vec![],
        created_at: at,
        updated_at: at,
    }
}

fn draft(kind: &str, id: &RunId) -> AuditDraft {
    AuditDraft::new(kind, "alice", format!("run:{id}"), serde_json::json!({}))
}

fn plain(run: Run) -> NewRun {
    let audit = vec![draft("run.created", &run.id)];
    NewRun {
        run,
        lease: None,
        start_after: None,
        count: false,
        audit,
    }
}

fn create(store: &dyn Store, run: Run) -> Run {
    let mut new = Some(plain(run));
    store
        .create_run(None, t0(), &mut |_| new.take().expect("decide called once"))
        .expect("create run")
}

fn head(store: &dyn Store) -> u64 {
    store.audit_head().expect("audit head").unwrap_or(0)
}

fn rate_check(who: &str, key: &str, rate: &str) -> RateCheck {
    RateCheck {
        principal: user(who),
        key: key.into(),
        rate: rate.parse().expect("valid rate"),
    }
}

/// Creates a run under `rc` at `now` the way the server does: allowed runs
/// count, refused ones are stored as `rate_limited`. Returns the stored state.
fn attempt(store: &dyn Store, rc: &RateCheck, n: u32, now: OffsetDateTime) -> RunState {
    let rate: Rate = rc.rate;
    let run = store
        .create_run(Some(rc), now, &mut |recent| {
            let mut run = sample(n, RunState::Approved, now);
            run.requester = rc.principal.clone();
            match rate.decide(recent, now) {
                RateDecision::Allow => NewRun {
                    count: true,
                    ..plain(run)
                },
                RateDecision::Refuse { next_allowed_at } => {
                    run.state = RunState::RateLimited;
                    run.next_allowed_at = Some(next_allowed_at);
                    NewRun {
                        audit: vec![draft("run.rate_limited", &run.id)],
                        ..plain(run)
                    }
                }
            }
        })
        .expect("create run");
    run.state
}

/// Every field of a run (params, dry run, argv with metacharacters) reads back unchanged.
pub fn create_run_then_get_returns_every_field_with_its_audit(make: &MakeStore) {
    let store = make(None);
    let mut r = sample(1, RunState::Pending, t0());
    r.operation = Some(OperationName::parse("restart-deployment").expect("valid"));
    r.params = Some(BTreeMap::from([(
        "deployment".to_string(),
        "web \"quoted\" ünï".to_string(),
    )]));
    r.dry_run = Some(DryRun {
        argv: vec!["/bin/echo".into(), "--dry-run=server".into()],
        exit_code: Some(0),
        output: "would restart\n".into(),
        output_sha256: "ab".repeat(32),
        truncated: false,
        error: None,
    });
    let stored = create(&*store, r.clone());
    assert_eq!(stored, r);
    assert_eq!(store.get_run(&r.id).expect("get"), Some(r.clone()));
    assert_eq!(store.get_run(&run_id(2)).expect("get missing"), None);
    assert_eq!(head(&*store), 1, "run.created is in the chain");
    let mut dup = Some(plain(r));
    let err = store
        .create_run(None, t0(), &mut |_| dup.take().expect("once"))
        .unwrap_err();
    assert!(matches!(err, StoreError::Duplicate(_)), "{err:?}");
    assert_eq!(head(&*store), 1, "a refused insert writes no audit event");
}

/// N per window per (principal, key): the N+1st is refused, others are not
/// affected, and the window slides.
pub fn rate_limit_counts_per_principal_and_key_and_frees_after_the_window(make: &MakeStore) {
    let store = make(None);
    let a = rate_check("alice", "tool:kubectl:[\"delete\"]", "2/10m");
    let mut n = 0;
    let mut next = |store: &dyn Store, rc: &RateCheck, at: OffsetDateTime| {
        n += 1;
        attempt(store, rc, n, at)
    };
    assert_eq!(next(&*store, &a, t0()), RunState::Approved);
    assert_eq!(
        next(&*store, &a, t0() + Duration::minutes(1)),
        RunState::Approved
    );
    assert_eq!(
        next(&*store, &a, t0() + Duration::minutes(2)),
        RunState::RateLimited
    );
    // Refused attempts do not count: still refused only until the first event leaves.
    assert_eq!(
        next(&*store, &a, t0() + Duration::minutes(9)),
        RunState::RateLimited
    );
    let other_key = rate_check("alice", "operation:other", "2/10m");
    assert_eq!(
        next(&*store, &other_key, t0() + Duration::minutes(9)),
        RunState::Approved
    );
    let other_user = rate_check("bob", "tool:kubectl:[\"delete\"]", "2/10m");
    assert_eq!(
        next(&*store, &other_user, t0() + Duration::minutes(9)),
        RunState::Approved
    );
    assert_eq!(
        next(&*store, &a, t0() + Duration::minutes(10)),
        RunState::Approved,
        "the first event left the window"
    );
    assert_eq!(
        next(&*store, &a, t0() + Duration::minutes(10)),
        RunState::RateLimited
    );
    let limited = store
        .list_runs(&RunFilter {
            state: Some(RunState::RateLimited),
            ..Default::default()
        })
        .expect("list");
    assert_eq!(limited.len(), 3);
    assert!(limited.iter().all(|r| r.next_allowed_at.is_some()));
}

/// Counts a run-less event (a dry run) under `rc` the way the server does.
fn attempt_event(store: &dyn Store, rc: &RateCheck, marker: &str, now: OffsetDateTime) -> bool {
    let rate: Rate = rc.rate;
    store
        .record_rate_event(rc, marker, now, &mut |recent| {
            let count = rate.decide(recent, now) == RateDecision::Allow;
            RateEvent {
                count,
                audit: vec![AuditDraft::new(
                    if count {
                        "operation.dry_run"
                    } else {
                        "operation.dry_run.rate_limited"
                    },
                    "alice",
                    "operation:restart",
                    serde_json::json!({}),
                )],
            }
        })
        .expect("record rate event")
}

/// Dry runs (events without a run) and runs count in one window per
/// (principal, key); refused events are audited but not counted.
pub fn rate_events_without_a_run_share_the_limit_with_runs(make: &MakeStore) {
    let store = make(None);
    let rc = rate_check("alice", "operation:restart", "2/10m");
    let before = head(&*store);
    assert!(attempt_event(&*store, &rc, "dry_1", t0()));
    assert_eq!(
        head(&*store),
        before + 1,
        "the event's audit is written with it"
    );
    assert_eq!(
        attempt(&*store, &rc, 1, t0() + Duration::minutes(1)),
        RunState::Approved
    );
    assert!(
        !attempt_event(&*store, &rc, "dry_2", t0() + Duration::minutes(2)),
        "a third event in the window is refused"
    );
    assert_eq!(head(&*store), before + 3, "refusals are audited");
    assert_eq!(
        attempt(&*store, &rc, 2, t0() + Duration::minutes(3)),
        RunState::RateLimited,
        "the dry run counted against the run"
    );
    let other = rate_check("bob", "operation:restart", "2/10m");
    assert!(attempt_event(
        &*store,
        &other,
        "dry_3",
        t0() + Duration::minutes(3)
    ));
    assert!(
        attempt_event(&*store, &rc, "dry_4", t0() + Duration::minutes(10)),
        "the first event left the window"
    );
}

/// Many replicas creating at once never get more than N runs through.
pub fn concurrent_creates_never_exceed_the_rate_limit(make: &MakeStore) {
    let store = make(None);
    let threads = 8;
    let barrier = Arc::new(Barrier::new(threads));
    let handles: Vec<_> = (0..threads)
        .map(|i| {
            let store = store.clone();
            let barrier = barrier.clone();
            thread::spawn(move || {
                let rc = rate_check("alice", "operation:restart", "3/1h");
                barrier.wait();
                attempt(
                    &*store,
                    &rc,
                    100 + i as u32,
                    t0() + Duration::seconds(i as i64),
                )
            })
        })
        .collect();
    let states: Vec<RunState> = handles
        .into_iter()
        .map(|h| h.join().expect("thread"))
        .collect();
    let allowed = states.iter().filter(|s| **s == RunState::Approved).count();
    assert_eq!(allowed, 3, "{states:?}");
}

fn start(
    lease: &crate::RunLease,
    run: &Run,
    owner: &str,
) -> Result<RunChange, airlock_core::Error> {
    let _ = lease;
    Ok(RunChange {
        state: Some(run.state.apply(RunTransition::Start)?),
        started_at: Some(t0()),
        lease: Some(LeaseChange::Hold(
            owner.into(),
            t0() + Duration::seconds(30),
        )),
        audit: vec![draft("run.started", &run.id)],
        ..Default::default()
    })
}

/// Two executors racing to start one approved run: exactly one wins.
pub fn approved_run_is_claimed_exactly_once_under_concurrency(make: &MakeStore) {
    let store = make(None);
    let id = create(&*store, sample(1, RunState::Approved, t0())).id;
    let threads = 6;
    let barrier = Arc::new(Barrier::new(threads));
    let handles: Vec<_> = (0..threads)
        .map(|i| {
            let (store, barrier, id) = (store.clone(), barrier.clone(), id.clone());
            thread::spawn(move || {
                barrier.wait();
                store
                    .update_run(&id, t0(), &mut |run, lease| {
                        start(lease, run, &format!("replica-{i}"))
                    })
                    .is_ok()
            })
        })
        .collect();
    let wins = handles
        .into_iter()
        .map(|h| h.join().expect("thread"))
        .filter(|ok| *ok)
        .count();
    assert_eq!(wins, 1);
    assert_eq!(head(&*store), 2, "one run.created, one run.started");
    let r = store.get_run(&id).expect("get").expect("present");
    assert_eq!(r.state, RunState::Running);
}

/// The finish writes state, exit code, transcript and its hash with the audit
/// event in one transaction; a second transcript is refused and rolls back.
pub fn finishing_stores_the_transcript_and_its_hash_atomically(make: &MakeStore) {
    let store = make(None);
    let id = create(&*store, sample(1, RunState::Approved, t0())).id;
    store
        .update_run(&id, t0(), &mut |r, l| start(l, r, "me"))
        .expect("start");
    let body = b"line 1\n\x00binary\xff\n".to_vec();
    let transcript = Transcript {
        sha256: "cd".repeat(32),
        bytes: body.clone(),
        output_bytes: 5000,
        truncated: true,
    };
    let r = store
        .update_run(&id, t0() + Duration::seconds(3), &mut |r, lease| {
            assert_eq!(lease.owner.as_deref(), Some("me"));
            Ok(RunChange {
                state: Some(r.state.apply(RunTransition::Fail)?),
                finished_at: Some(t0() + Duration::seconds(3)),
                exit_code: Some(3),
                transcript: Some(transcript.clone()),
                lease: Some(LeaseChange::Release),
                audit: vec![draft("run.finished", &r.id)],
                ..Default::default()
            })
        })
        .expect("finish");
    assert_eq!(r.state, RunState::Failed);
    assert_eq!(r.exit_code, Some(3));
    assert_eq!(
        r.transcript_sha256.as_deref(),
        Some("cd".repeat(32).as_str())
    );
    assert_eq!(r.transcript_bytes, Some(body.len() as u64));
    assert_eq!((r.output_bytes, r.transcript_truncated), (Some(5000), true));
    assert_eq!(store.run_transcript(&id).expect("transcript"), Some(body));
    let before = head(&*store);
    let err = store
        .update_run(&id, t0(), &mut |r, _| {
            Ok(RunChange {
                error: Some("again".into()),
                transcript: Some(transcript.clone()),
                audit: vec![draft("run.finished", &r.id)],
                ..Default::default()
            })
        })
        .unwrap_err();
    assert!(matches!(err, StoreError::Duplicate(_)), "{err:?}");
    assert_eq!(head(&*store), before);
    assert_eq!(
        store.get_run(&id).expect("get").expect("present").error,
        None
    );
    let key = None;
    let mut v = ChainVerifier::new(key, vec![]);
    store
        .audit_scan(&mut |seq, body, hash| {
            v.feed(seq, body, hash);
            true
        })
        .expect("scan");
    assert!(v.finish(store.audit_head().expect("head")).ok);
}

/// A domain rejection writes nothing, not even audit events.
pub fn rejected_run_change_writes_nothing(make: &MakeStore) {
    let store = make(None);
    let id = create(&*store, sample(1, RunState::Pending, t0())).id;
    let err = store
        .update_run(&id, t0(), &mut |r, l| start(l, r, "me"))
        .unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::Rejected(airlock_core::Error::Conflict { .. })
        ),
        "{err:?}"
    );
    assert_eq!(head(&*store), 1);
    let err = store
        .update_run(&run_id(9), t0(), &mut |r, l| start(l, r, "me"))
        .unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::Rejected(airlock_core::Error::NotFound { .. })
        ),
        "{err:?}"
    );
}

/// The same reviewer cannot be recorded twice on one run.
pub fn run_reviews_are_unique_per_reviewer(make: &MakeStore) {
    let store = make(None);
    let id = create(&*store, sample(1, RunState::Pending, t0())).id;
    let review = Review {
        reviewer: user("bob"),
        decision: ReviewDecision::Approve,
        comment: Some("ok".into()),
        at: t0(),
    };
    let r = store
        .update_run(&id, t0(), &mut |_, _| {
            Ok(RunChange {
                review: Some(review.clone()),
                ..Default::default()
            })
        })
        .expect("review");
    assert_eq!(r.reviews, vec![review.clone()]);
    let err = store
        .update_run(&id, t0(), &mut |_, _| {
            Ok(RunChange {
                review: Some(review.clone()),
                ..Default::default()
            })
        })
        .unwrap_err();
    assert!(matches!(err, StoreError::Duplicate(_)), "{err:?}");
    assert_eq!(
        store
            .get_run(&id)
            .expect("get")
            .expect("present")
            .reviews
            .len(),
        1
    );
}

/// Pending past its window, approved and startable, running with a dead lease.
pub fn due_runs_selects_lapsed_startable_and_abandoned_runs(make: &MakeStore) {
    let store = make(None);
    let now = t0() + Duration::hours(25);
    create(&*store, sample(1, RunState::Pending, t0())); // lapses at t0+24h: due
    create(&*store, sample(2, RunState::Pending, now)); // lapses later
    let mut startable = Some(NewRun {
        start_after: Some(t0()),
        ..plain(sample(3, RunState::Approved, t0()))
    });
    store
        .create_run(None, t0(), &mut |_| startable.take().expect("once"))
        .expect("create");
    create(&*store, sample(4, RunState::Approved, t0())); // attached: no start_after
    let mut dead = Some(NewRun {
        lease: Some(("gone".into(), now - Duration::seconds(1))),
        ..plain(sample(5, RunState::Running, t0()))
    });
    store
        .create_run(None, t0(), &mut |_| dead.take().expect("once"))
        .expect("create");
    let mut alive = Some(NewRun {
        lease: Some(("alive".into(), now + Duration::seconds(10))),
        ..plain(sample(6, RunState::Running, t0()))
    });
    store
        .create_run(None, t0(), &mut |_| alive.take().expect("once"))
        .expect("create");
    let due = store.due_runs(now, 100).expect("due");
    let mut ids: Vec<String> = due.iter().map(|i| i.to_string()).collect();
    ids.sort();
    assert_eq!(
        ids,
        [run_id(1), run_id(3), run_id(5)].map(|i| i.to_string())
    );
    assert_eq!(store.due_runs(now, 1).expect("due").len(), 1);
}

/// Newest first; state and requester filters narrow.
pub fn list_runs_is_newest_first_and_filters(make: &MakeStore) {
    let store = make(None);
    for i in 0..5u32 {
        let mut r = sample(i, RunState::Pending, t0() + Duration::seconds(i as i64));
        if i % 2 == 1 {
            r.requester = user("bob");
            r.state = RunState::Approved;
            r.lapses_at = None;
        }
        create(&*store, r);
    }
    let all = store.list_runs(&RunFilter::default()).expect("list");
    let ids: Vec<_> = all.iter().map(|r| r.id.clone()).collect();
    assert_eq!(ids, (0..5).rev().map(run_id).collect::<Vec<_>>());
    let bobs = store
        .list_runs(&RunFilter {
            requester: Some(user("bob")),
            state: Some(RunState::Approved),
            limit: 1,
            ..Default::default()
        })
        .expect("list");
    assert_eq!(
        bobs.iter().map(|r| r.id.clone()).collect::<Vec<_>>(),
        vec![run_id(3)]
    );
}

/// A cursor (`created_at`, id of the last item) continues exactly after it,
/// also when several runs share one `created_at`: every run once, in order.
pub fn list_runs_pages_with_a_cursor_across_equal_times(make: &MakeStore) {
    let store = make(None);
    for i in 0..7u32 {
        // Pairs share a timestamp: 0,1 | 2,3 | 4,5 | 6.
        create(
            &*store,
            sample(
                i,
                RunState::Pending,
                t0() + Duration::seconds((i / 2) as i64),
            ),
        );
    }
    let all: Vec<RunId> = store
        .list_runs(&RunFilter::default())
        .expect("list")
        .into_iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(all.len(), 7);
    let mut paged = Vec::new();
    let mut after = None;
    loop {
        let page = store
            .list_runs(&RunFilter {
                after: after.clone(),
                limit: 3,
                ..Default::default()
            })
            .expect("page");
        assert!(page.len() <= 3);
        let Some(last) = page.last() else { break };
        after = Some((last.created_at, last.id.clone()));
        paged.extend(page.iter().map(|r| r.id.clone()));
    }
    assert_eq!(paged, all, "pages concatenate to the unpaged list");
}
