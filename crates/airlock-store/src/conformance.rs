//! One behavioural test suite for every [`Store`], so SQLite and PostgreSQL
//! cannot drift apart. Expand it in a test crate with [`store_conformance_tests!`];
//! each case takes a factory that returns a fresh, empty store.

use std::collections::HashSet;
use std::sync::{Arc, Barrier};
use std::thread;

use airlock_core::audit_chain::{AuditDraft, ChainVerifier, CheckpointSigner};
use airlock_core::request::{
    GrantPhase, GrantStatus, Request, RequestId, RequestState, Review, ReviewDecision,
};
use airlock_core::{EntitlementName, GroupName, Span, UserName};
use time::macros::datetime;
use time::{Duration, OffsetDateTime};

use crate::{Change, RequestFilter, Store, StoreError, TokenFilter, TokenRecord};

/// Builds a fresh, empty store, optionally signing checkpoints.
pub type MakeStore = dyn Fn(Option<CheckpointSigner>) -> Arc<dyn Store>;

/// Expands one `#[test]` per conformance case; `$make` is a path to a
/// `fn(Option<CheckpointSigner>) -> Arc<dyn Store>` returning a fresh store.
#[macro_export]
macro_rules! store_conformance_tests {
    ($make:path) => {
        $crate::store_conformance_tests!(@cases $make;
            create_then_get_returns_every_field,
            timestamps_are_truncated_to_whole_microseconds,
            duplicate_request_id_is_refused_and_writes_no_audit_event,
            list_returns_newest_first_and_applies_every_filter,
            list_limit_zero_means_one_hundred,
            list_scopes_to_what_a_principal_may_read_and_pages_by_cursor,
            update_request_applies_every_change_field_with_its_audit_events,
            rejected_change_writes_no_audit_event,
            empty_change_leaves_the_request_untouched,
            unknown_request_is_rejected_as_not_found,
            failed_write_rolls_back_state_and_audit,
            concurrent_reviewers_never_exceed_the_required_count,
            claim_work_never_hands_a_row_to_two_owners,
            lease_blocks_other_owners_until_it_expires,
            claim_work_selects_exactly_the_due_rows,
            next_due_is_the_earliest_deadline_and_waits_for_leases,
            audit_chain_verifies_with_signed_checkpoints_after_many_writes,
            signing_the_head_is_idempotent_and_matches_the_tree,
            audit_events_pages_by_sequence_number,
            audit_scan_stops_when_the_visitor_says_so,
            tokens_round_trip_and_duplicates_are_refused,
            revoking_a_token_ends_the_sessions_started_from_it,
            token_list_shows_live_tokens_and_last_use,
            an_identity_binds_its_name_once_and_others_are_refused,
            locks_hold_until_removed_or_expired,
            notify_sink_cursor_is_leased_and_monotonic,
            chat_messages_round_trip,
            count_by_state_reports_every_state,
            open_post_reviews_are_listed_and_counted_in_any_state,
            overdue_grants_are_active_ones_past_not_after,
            certificates_get_unique_serials_and_are_revoked_with_their_request,
            gateway_sessions_record_watch_and_end_once,
            ping_succeeds,
        );
    };
    (@cases $make:path; $($case:ident),* $(,)?) => {
        $(
            #[test]
            fn $case() {
                $crate::conformance::$case(&$make);
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

fn rid(n: u32) -> RequestId {
    RequestId::parse(&format!("req{n:08}")).expect("valid id")
}

/// A pending request created at `created_at`.
fn sample(n: u32, created_at: OffsetDateTime) -> Request {
    Request {
        id: rid(n),
        entitlement: EntitlementName::parse("payments-db-write").expect("valid entitlement"),
        requester: user("alice"),
        reason: "INC-4211".into(),
        state: RequestState::Pending,
        requested_duration: Span::from_secs(1800).expect("valid span"),
        not_before: None,
        not_after: None,
        breakglass: false,
        post_review_closed: false,
        reviews: vec![],
        grant: GrantStatus {
            phase: GrantPhase::None,
            attempts: 0,
            last_error: None,
            next_attempt_at: None,
        },
        created_at,
        updated_at: created_at,
        secret_salt: vec![7; 16],
    }
}

fn draft(kind: &str, subject: &str) -> AuditDraft {
    AuditDraft::new(
        kind,
        "alice",
        subject,
        serde_json::json!({"k": kind, "n": [1, 2]}),
    )
}

fn head(store: &dyn Store) -> u64 {
    store.audit_head().expect("audit head").unwrap_or(0)
}

fn create(store: &dyn Store, r: &Request, lapses_at: OffsetDateTime) {
    store
        .create_request(
            r,
            lapses_at,
            &[draft("request.created", &format!("request:{}", r.id))],
            r.created_at,
        )
        .expect("create request");
}

fn sorted_ids(rs: &[Request]) -> Vec<String> {
    let mut v: Vec<String> = rs.iter().map(|r| r.id.to_string()).collect();
    v.sort();
    v
}

fn review(by: &str, at: OffsetDateTime) -> Review {
    Review {
        reviewer: user(by),
        decision: ReviewDecision::Approve,
        comment: Some(format!("ok from {by}")),
        at,
    }
}

/// Every field written by `create_request` is read back unchanged.
pub fn create_then_get_returns_every_field(make: &MakeStore) {
    let store = make(None);
    let mut r = sample(1, t0());
    r.state = RequestState::Active;
    r.not_before = Some(t0() + Duration::minutes(1));
    r.not_after = Some(t0() + Duration::minutes(31));
    r.breakglass = true;
    r.post_review_closed = true;
    r.reason = "INC-1 \"quoted\" ünïcode".into();
    r.reviews = vec![
        review("bob", t0()),
        Review {
            comment: None,
            decision: ReviewDecision::Deny,
            ..review("carol", t0())
        },
    ];
    r.grant = GrantStatus {
        phase: GrantPhase::Applied,
        attempts: 3,
        last_error: Some("connection refused".into()),
        next_attempt_at: Some(t0() + Duration::seconds(7)),
    };
    r.updated_at = t0() + Duration::seconds(2);
    create(&*store, &r, t0() + Duration::hours(1));
    assert_eq!(store.get_request(&r.id).expect("get"), Some(r));
    assert_eq!(store.get_request(&rid(2)).expect("get missing"), None);
}

/// Timestamps keep microseconds and drop anything finer, consistently.
pub fn timestamps_are_truncated_to_whole_microseconds(make: &MakeStore) {
    let store = make(None);
    let precise = datetime!(2030-01-02 03:04:05.123456789 UTC);
    let r = sample(1, precise);
    create(&*store, &r, precise);
    let got = store.get_request(&r.id).expect("get").expect("present");
    assert_eq!(got.created_at, datetime!(2030-01-02 03:04:05.123456 UTC));
    let before_epoch = datetime!(1969-12-31 23:59:59.9999995 UTC);
    let r2 = sample(2, before_epoch);
    create(&*store, &r2, precise);
    let got = store.get_request(&r2.id).expect("get").expect("present");
    assert_eq!(
        got.created_at,
        datetime!(1969-12-31 23:59:59.999999 UTC),
        "truncation is toward the past"
    );
}

/// A second request with the same id is `Duplicate` and leaves the chain alone.
pub fn duplicate_request_id_is_refused_and_writes_no_audit_event(make: &MakeStore) {
    let store = make(None);
    let r = sample(1, t0());
    create(&*store, &r, t0());
    let err = store
        .create_request(&r, t0(), &[draft("request.created", "x")], t0())
        .unwrap_err();
    assert!(matches!(err, StoreError::Duplicate(_)), "{err:?}");
    assert_eq!(head(&*store), 1);
}

/// A sink's cursor starts where asked, only its lease holder moves it, never
/// backwards, and an expired lease passes to another replica with the cursor.
pub fn notify_sink_cursor_is_leased_and_monotonic(make: &MakeStore) {
    let store = make(None);
    let until = t0() + Duration::seconds(30);
    assert_eq!(
        store
            .lease_sink("webhook:a", "r1", 5, until, t0())
            .expect("lease"),
        Some(5)
    );
    // The start position only applies the first time.
    assert_eq!(
        store
            .lease_sink("webhook:a", "r1", 9, until, t0())
            .expect("renew"),
        Some(5)
    );
    assert_eq!(
        store
            .lease_sink("webhook:a", "r2", 0, until, t0())
            .expect("busy"),
        None
    );
    assert!(!store
        .advance_sink("webhook:a", "r2", 7, t0())
        .expect("not holder"));
    assert!(store
        .advance_sink("webhook:a", "r1", 7, t0())
        .expect("advance"));
    assert!(store
        .advance_sink("webhook:a", "r1", 6, t0())
        .expect("stale"));
    let later = until + Duration::seconds(1);
    assert_eq!(
        store
            .lease_sink("webhook:a", "r2", 0, later + Duration::seconds(30), later)
            .expect("take over"),
        Some(7)
    );
    assert!(!store
        .advance_sink("webhook:a", "r1", 8, later)
        .expect("lost lease"));
    assert_eq!(
        store
            .lease_sink("slack", "r1", 0, until, t0())
            .expect("other sink"),
        Some(0)
    );
    assert_eq!(
        store.sink_cursors().expect("cursors"),
        vec![("slack".to_string(), 0), ("webhook:a".to_string(), 7)]
    );
}

/// Chat message locations read back and can be replaced.
pub fn chat_messages_round_trip(make: &MakeStore) {
    let store = make(None);
    assert_eq!(
        store.chat_message("slack", "request:r1").expect("get"),
        None
    );
    store
        .put_chat_message("slack", "request:r1", r#"{"ts":"1"}"#)
        .expect("put");
    store
        .put_chat_message("slack", "request:r1", r#"{"ts":"2"}"#)
        .expect("replace");
    store
        .put_chat_message("other", "request:r1", "x")
        .expect("other sink");
    assert_eq!(
        store
            .chat_message("slack", "request:r1")
            .expect("get")
            .as_deref(),
        Some(r#"{"ts":"2"}"#)
    );
}

/// Listing is newest first and every filter narrows the result.
pub fn list_returns_newest_first_and_applies_every_filter(make: &MakeStore) {
    let store = make(None);
    let ents = ["db-read", "db-write", "k8s-admin"];
    for n in 0..6u32 {
        let mut r = sample(n, t0() + Duration::minutes(i64::from(n)));
        r.requester = user(if n % 2 == 0 { "alice" } else { "bob" });
        r.entitlement = EntitlementName::parse(ents[n as usize % 3]).expect("valid");
        if n >= 4 {
            r.state = RequestState::Denied;
        }
        create(&*store, &r, t0());
    }
    let list = |f: RequestFilter| -> Vec<String> {
        store
            .list_requests(&f)
            .expect("list")
            .iter()
            .map(|r| r.id.to_string())
            .collect()
    };
    let all = list(RequestFilter::default());
    assert_eq!(
        all,
        (0..6).rev().map(|n| rid(n).to_string()).collect::<Vec<_>>()
    );
    assert_eq!(
        list(RequestFilter {
            limit: 2,
            ..Default::default()
        }),
        all[..2].to_vec()
    );
    assert_eq!(
        list(RequestFilter {
            state: Some(RequestState::Denied),
            ..Default::default()
        }),
        vec![rid(5).to_string(), rid(4).to_string()]
    );
    assert_eq!(
        list(RequestFilter {
            requester: Some(user("bob")),
            ..Default::default()
        }),
        vec![rid(5).to_string(), rid(3).to_string(), rid(1).to_string()]
    );
    assert_eq!(
        list(RequestFilter {
            entitlements: Some(vec!["db-read".into(), "k8s-admin".into()]),
            ..Default::default()
        }),
        vec![
            rid(5).to_string(),
            rid(3).to_string(),
            rid(2).to_string(),
            rid(0).to_string()
        ]
    );
    assert!(list(RequestFilter {
        entitlements: Some(vec![]),
        ..Default::default()
    })
    .is_empty());
    assert_eq!(
        list(RequestFilter {
            state: Some(RequestState::Pending),
            requester: Some(user("alice")),
            entitlements: Some(vec!["db-write".into(), "db-read".into()]),
            limit: 10,
            ..Default::default()
        }),
        vec![rid(0).to_string()]
    );
}

/// `limit: 0` returns the default page of 100.
pub fn list_limit_zero_means_one_hundred(make: &MakeStore) {
    let store = make(None);
    for n in 0..101u32 {
        create(
            &*store,
            &sample(n, t0() + Duration::seconds(i64::from(n))),
            t0(),
        );
    }
    assert_eq!(
        store
            .list_requests(&RequestFilter::default())
            .expect("list")
            .len(),
        100
    );
    assert_eq!(
        store
            .list_requests(&RequestFilter {
                limit: 5000,
                ..Default::default()
            })
            .expect("list")
            .len(),
        101
    );
}

/// Every field of a `Change` lands, with `updated_at = now`, and its events are chained.
pub fn update_request_applies_every_change_field_with_its_audit_events(make: &MakeStore) {
    let store = make(None);
    let r = sample(1, t0());
    create(&*store, &r, t0());
    assert_eq!(
        store
            .claim_work(t0(), "worker-a", Duration::minutes(10), 10)
            .expect("claim")
            .len(),
        1
    );
    let t1 = t0() + Duration::seconds(30);
    let grant = GrantStatus {
        phase: GrantPhase::Applying,
        attempts: 2,
        last_error: Some("timeout".into()),
        next_attempt_at: Some(t1 + Duration::seconds(5)),
    };
    let window = (t1, t1 + Duration::minutes(30));
    let updated = store
        .update_request(&r.id, t1, &mut |cur| {
            assert_eq!(cur.state, RequestState::Pending);
            Ok(Change {
                state: Some(RequestState::Approved),
                review: Some(review("bob", t1)),
                window: Some(window),
                grant: Some(grant.clone()),
                post_review_closed: Some(true),
                release_lease: true,
                audit: vec![
                    draft("request.reviewed", "request:1"),
                    draft("request.approved", "request:1"),
                ],
            })
        })
        .expect("update");
    let mut want = r.clone();
    want.state = RequestState::Approved;
    want.reviews = vec![review("bob", t1)];
    want.not_before = Some(window.0);
    want.not_after = Some(window.1);
    want.grant = grant;
    want.post_review_closed = true;
    want.updated_at = t1;
    assert_eq!(updated, want);
    assert_eq!(store.get_request(&r.id).expect("get"), Some(want));
    assert_eq!(head(&*store), 3);
    let kinds: Vec<String> = store
        .audit_events(1, 10)
        .expect("events")
        .iter()
        .map(|e| e.to_event().expect("airlock event").kind)
        .collect();
    assert_eq!(kinds, ["request.reviewed", "request.approved"]);
    // The released lease lets another worker claim the (now due) apply at once.
    let claimed = store
        .claim_work(
            t1 + Duration::seconds(10),
            "worker-b",
            Duration::minutes(1),
            10,
        )
        .expect("claim");
    assert_eq!(sorted_ids(&claimed), vec![r.id.to_string()]);
}

/// Serials are unique and audited; a certificate is listed as revoked once its
/// request has left `active`, and only until the certificate expires.
pub fn certificates_get_unique_serials_and_are_revoked_with_their_request(make: &MakeStore) {
    let store = make(None);
    let mut r = sample(1, t0());
    r.state = RequestState::Active;
    create(&*store, &r, t0());
    let mut other = sample(2, t0());
    other.state = RequestState::Active;
    create(&*store, &other, t0());
    let until = t0() + Duration::hours(1);
    let issue = |provider: &str, req: &Request| {
        let cert = crate::CertificateRecord {
            provider: provider.into(),
            request_id: req.id.clone(),
            key_id: format!("alice@{}", req.id),
            valid_before: until,
        };
        store
            .issue_certificate(
                &cert,
                &mut |serial| {
                    AuditDraft::new(
                        "credential.issued",
                        "alice",
                        "request:1",
                        serde_json::json!({ "serial": serial }),
                    )
                },
                t0(),
            )
            .expect("issue")
    };
    let a = issue("ssh-prod", &r);
    let b = issue("ssh-prod", &r);
    let c = issue("ssh-other", &r);
    let d = issue("ssh-prod", &other);
    let mut all = vec![a, b, c, d];
    all.sort();
    all.dedup();
    assert_eq!(all.len(), 4, "serials repeat: {a} {b} {c} {d}");
    assert!(a >= 1);
    let events = store.audit_events(head(&*store) - 4, 10).expect("events");
    let serials: Vec<u64> = events
        .iter()
        .map(|e| {
            e.to_event().expect("event").data["serial"]
                .as_u64()
                .expect("serial")
        })
        .collect();
    assert_eq!(serials, vec![a, b, c, d]);
    assert!(store
        .revoked_certificates("ssh-prod", t0())
        .expect("krl")
        .is_empty());
    store
        .update_request(&r.id, t0(), &mut |_| {
            Ok(Change {
                state: Some(RequestState::Revoked),
                ..Change::default()
            })
        })
        .expect("revoke");
    assert_eq!(
        store.revoked_certificates("ssh-prod", t0()).expect("krl"),
        vec![a, b]
    );
    assert_eq!(
        store.revoked_certificates("ssh-other", t0()).expect("krl"),
        vec![c]
    );
    // Expired certificates need no revocation entry.
    assert!(store
        .revoked_certificates("ssh-prod", until)
        .expect("krl")
        .is_empty());
}

/// A refusal from `decide` changes nothing and is returned as `Rejected`.
pub fn rejected_change_writes_no_audit_event(make: &MakeStore) {
    let store = make(None);
    let r = sample(1, t0());
    create(&*store, &r, t0() + Duration::hours(1));
    let refusal = airlock_core::Error::Conflict {
        current_state: "pending".into(),
        message: "no".into(),
    };
    let err = store
        .update_request(&r.id, t0() + Duration::minutes(1), &mut |_| {
            Err(refusal.clone())
        })
        .unwrap_err();
    assert!(
        matches!(&err, StoreError::Rejected(e) if *e == refusal),
        "{err:?}"
    );
    assert_eq!(head(&*store), 1);
    assert_eq!(store.get_request(&r.id).expect("get"), Some(r));
}

/// An empty change returns the request as it is and touches nothing.
pub fn empty_change_leaves_the_request_untouched(make: &MakeStore) {
    let store = make(None);
    let r = sample(1, t0());
    create(&*store, &r, t0() + Duration::hours(1));
    let got = store
        .update_request(&r.id, t0() + Duration::minutes(1), &mut |_| {
            Ok(Change::default())
        })
        .expect("update");
    assert_eq!(got, r);
    assert_eq!(store.get_request(&r.id).expect("get"), Some(r));
    assert_eq!(head(&*store), 1);
}

/// An id without a row is a `NotFound` refusal naming the request.
pub fn unknown_request_is_rejected_as_not_found(make: &MakeStore) {
    let store = make(None);
    let mut called = false;
    let err = store
        .update_request(&rid(9), t0(), &mut |_| {
            called = true;
            Ok(Change::default())
        })
        .unwrap_err();
    assert!(!called);
    match err {
        StoreError::Rejected(airlock_core::Error::NotFound { what }) => {
            assert_eq!(what, format!("request `{}`", rid(9)))
        }
        other => panic!("expected NotFound, got {other:?}"),
    }
}

/// When part of a change fails (here a second review by the same reviewer),
/// the state change and the audit events roll back with it.
pub fn failed_write_rolls_back_state_and_audit(make: &MakeStore) {
    let store = make(None);
    let r = sample(1, t0());
    create(&*store, &r, t0() + Duration::hours(1));
    let change = |state| Change {
        state,
        review: Some(review("bob", t0())),
        audit: vec![draft("request.reviewed", "r")],
        ..Change::default()
    };
    store
        .update_request(&r.id, t0(), &mut |_| Ok(change(None)))
        .expect("first review");
    let before = store.get_request(&r.id).expect("get");
    let err = store
        .update_request(&r.id, t0() + Duration::minutes(1), &mut |_| {
            Ok(change(Some(RequestState::Approved)))
        })
        .unwrap_err();
    assert!(matches!(err, StoreError::Duplicate(_)), "{err:?}");
    assert_eq!(store.get_request(&r.id).expect("get"), before);
    assert_eq!(head(&*store), 2);
}

/// Reviewers racing on one request each see the others' reviews (the row is
/// locked), so exactly `needed` reviews and `needed` events are written.
pub fn concurrent_reviewers_never_exceed_the_required_count(make: &MakeStore) {
    const THREADS: usize = 8;
    const NEEDED: usize = 3;
    let store = make(None);
    let r = sample(1, t0());
    create(&*store, &r, t0() + Duration::hours(1));
    let barrier = Arc::new(Barrier::new(THREADS));
    let handles: Vec<_> = (0..THREADS)
        .map(|i| {
            let (store, barrier, id) = (store.clone(), barrier.clone(), r.id.clone());
            thread::spawn(move || {
                barrier.wait();
                store
                    .update_request(&id, t0(), &mut |cur| {
                        if cur.reviews.len() >= NEEDED {
                            return Ok(Change::default());
                        }
                        // Widen the race window: a store without a row lock fails here.
                        thread::sleep(std::time::Duration::from_millis(5));
                        Ok(Change {
                            review: Some(review(&format!("reviewer{i}"), t0())),
                            audit: vec![draft("request.reviewed", "r")],
                            ..Change::default()
                        })
                    })
                    .expect("update")
            })
        })
        .collect();
    for h in handles {
        h.join().expect("thread");
    }
    let got = store.get_request(&r.id).expect("get").expect("present");
    assert_eq!(got.reviews.len(), NEEDED);
    assert_eq!(head(&*store), 1 + NEEDED as u64);
}

/// Owners claiming concurrently split the due rows between them without overlap.
pub fn claim_work_never_hands_a_row_to_two_owners(make: &MakeStore) {
    const ROWS: u32 = 60;
    const THREADS: usize = 8;
    let store = make(None);
    for n in 0..ROWS {
        create(&*store, &sample(n, t0()), t0());
    }
    let now = t0() + Duration::minutes(1);
    let barrier = Arc::new(Barrier::new(THREADS));
    let handles: Vec<_> = (0..THREADS)
        .map(|i| {
            let (store, barrier) = (store.clone(), barrier.clone());
            thread::spawn(move || {
                barrier.wait();
                let mut mine = Vec::new();
                // Bounded, so a store that hands out leased rows fails instead of spinning.
                for _ in 0..ROWS {
                    let got = store
                        .claim_work(now, &format!("owner{i}"), Duration::minutes(5), 3)
                        .expect("claim");
                    if got.is_empty() {
                        break;
                    }
                    mine.extend(got.into_iter().map(|r| r.id.to_string()));
                }
                mine
            })
        })
        .collect();
    let mut all = Vec::new();
    for h in handles {
        all.extend(h.join().expect("thread"));
    }
    let unique: HashSet<&String> = all.iter().collect();
    assert_eq!(unique.len(), all.len(), "a row was claimed twice");
    assert_eq!(all.len(), ROWS as usize);
}

/// A lease keeps a row from other owners until it runs out.
pub fn lease_blocks_other_owners_until_it_expires(make: &MakeStore) {
    let store = make(None);
    let r = sample(1, t0());
    create(&*store, &r, t0());
    let lease = Duration::seconds(30);
    assert_eq!(
        store.claim_work(t0(), "a", lease, 10).expect("claim").len(),
        1
    );
    assert!(store
        .claim_work(t0() + Duration::seconds(29), "b", lease, 10)
        .expect("claim")
        .is_empty());
    let got = store
        .claim_work(t0() + Duration::seconds(30), "b", lease, 10)
        .expect("claim");
    assert_eq!(sorted_ids(&got), vec![r.id.to_string()]);
}

/// Apply, retry, expire, remove and lapse are due exactly when they should be.
pub fn claim_work_selects_exactly_the_due_rows(make: &MakeStore) {
    let store = make(None);
    let now = t0() + Duration::hours(1);
    let s = Duration::seconds(1);
    let mut n = 0;
    let mut due = Vec::new();
    let mut add = |is_due: bool, lapses_at: OffsetDateTime, edit: &dyn Fn(&mut Request)| {
        n += 1;
        let mut r = sample(n, t0() + Duration::seconds(i64::from(n)));
        edit(&mut r);
        create(&*store, &r, lapses_at);
        if is_due {
            due.push(r.id.to_string());
        }
    };
    let phase = |r: &mut Request, st, ph, next| {
        r.state = st;
        r.grant.phase = ph;
        r.grant.next_attempt_at = next;
    };
    let past = now - Duration::hours(2);
    add(true, now - s, &|_| {});
    add(true, now, &|_| {});
    add(false, now + s, &|_| {});
    add(true, past, &|r| {
        phase(r, RequestState::Approved, GrantPhase::Applying, None)
    });
    add(true, past, &|r| {
        phase(
            r,
            RequestState::Approved,
            GrantPhase::Applying,
            Some(now - s),
        )
    });
    add(false, past, &|r| {
        phase(
            r,
            RequestState::Approved,
            GrantPhase::Applying,
            Some(now + s),
        )
    });
    add(false, past, &|r| {
        phase(r, RequestState::Approved, GrantPhase::None, None)
    });
    add(true, past, &|r| {
        phase(r, RequestState::Active, GrantPhase::Applied, None);
        r.not_after = Some(now - s);
    });
    add(false, past, &|r| {
        phase(r, RequestState::Active, GrantPhase::Applied, None);
        r.not_after = Some(now + s);
    });
    add(true, past, &|r| {
        phase(r, RequestState::Expired, GrantPhase::Removing, None)
    });
    add(false, past, &|r| {
        phase(
            r,
            RequestState::Revoked,
            GrantPhase::Removing,
            Some(now + s),
        )
    });
    add(false, past, &|r| {
        phase(r, RequestState::Expired, GrantPhase::Removed, None)
    });
    add(false, past, &|r| {
        phase(r, RequestState::Denied, GrantPhase::None, None)
    });
    due.sort();

    let first = store
        .claim_work(now, "w", Duration::minutes(1), 2)
        .expect("claim");
    assert_eq!(
        first.iter().map(|r| r.id.to_string()).collect::<Vec<_>>(),
        due[..2].to_vec(),
        "oldest first"
    );
    let rest = store
        .claim_work(now, "w", Duration::minutes(1), 100)
        .expect("claim");
    let mut all = sorted_ids(&first);
    all.extend(sorted_ids(&rest));
    all.sort();
    assert_eq!(all, due);
}

/// `next_due` is the earliest deadline; a leased row counts from its lease end.
pub fn next_due_is_the_earliest_deadline_and_waits_for_leases(make: &MakeStore) {
    let store = make(None);
    assert_eq!(store.next_due().expect("next due"), None);
    let mut pending = sample(1, t0());
    pending.state = RequestState::Pending;
    create(&*store, &pending, t0() + Duration::minutes(10));
    let mut active = sample(2, t0());
    active.state = RequestState::Active;
    active.not_after = Some(t0() + Duration::minutes(5));
    create(
        &*store,
        &active,
        t0() - Duration::hours(1), /* ignored: not pending */
    );
    let mut finished = sample(3, t0());
    finished.state = RequestState::Denied;
    create(&*store, &finished, t0() - Duration::hours(2));
    assert_eq!(
        store.next_due().expect("next due"),
        Some(t0() + Duration::minutes(5))
    );

    let claimed = store
        .claim_work(t0() + Duration::minutes(6), "w", Duration::minutes(10), 10)
        .expect("claim");
    assert_eq!(sorted_ids(&claimed), vec![active.id.to_string()]);
    assert_eq!(
        store.next_due().expect("next due"),
        Some(t0() + Duration::minutes(10))
    );

    let mut applying = sample(4, t0());
    applying.state = RequestState::Approved;
    applying.grant.phase = GrantPhase::Applying;
    applying.updated_at = t0() + Duration::minutes(1);
    create(&*store, &applying, t0());
    assert_eq!(
        store.next_due().expect("next due"),
        Some(applying.updated_at),
        "an unscheduled apply is due at once"
    );
}

/// After many writes of every kind the chain and its signed checkpoints verify.
pub fn audit_chain_verifies_with_signed_checkpoints_after_many_writes(make: &MakeStore) {
    let signer = CheckpointSigner::new(ed25519_dalek::SigningKey::from_bytes(&[42u8; 32]), 10);
    let key = signer.verifying_key();
    let store = make(Some(signer));
    for n in 0..20u32 {
        let r = sample(n, t0() + Duration::seconds(i64::from(n)));
        create(&*store, &r, t0() + Duration::hours(1));
        store
            .update_request(&r.id, t0() + Duration::minutes(1), &mut |_| {
                Ok(Change {
                    review: Some(review("bob", t0())),
                    audit: vec![
                        draft("request.reviewed", "r"),
                        draft("request.approved", "r"),
                    ],
                    ..Change::default()
                })
            })
            .expect("update");
    }
    for batch in 0..4 {
        let drafts: Vec<AuditDraft> = (0..10)
            .map(|i| draft("drift.detected", &format!("grant:{batch}-{i}")))
            .collect();
        store
            .append_audit(&drafts, t0() + Duration::minutes(2))
            .expect("append");
    }
    let checkpoints = store.audit_checkpoints().expect("checkpoints");
    assert_eq!(
        checkpoints.iter().map(|c| c.seq).collect::<Vec<_>>(),
        (1..=10).map(|i| i * 10).collect::<Vec<_>>()
    );
    let mut verifier = ChainVerifier::new(Some(key), checkpoints);
    store
        .audit_scan(&mut |seq, body, hash| {
            verifier.feed(seq, body, hash);
            true
        })
        .expect("scan");
    let report = verifier.finish(store.audit_head().expect("head"));
    assert!(report.ok, "{report:?}");
    assert_eq!((report.events, report.checkpoints_verified), (100, 10));
}

/// The background tree-head signer signs a moved head once (a second call, as
/// from another replica, does nothing) and its root is the tree of the events.
pub fn signing_the_head_is_idempotent_and_matches_the_tree(make: &MakeStore) {
    let signer = CheckpointSigner::new(ed25519_dalek::SigningKey::from_bytes(&[42u8; 32]), 10);
    let key = signer.verifying_key();
    let store = make(Some(signer));
    assert!(
        store.audit_sign_head(t0()).expect("sign").is_none(),
        "empty chain"
    );
    let drafts: Vec<AuditDraft> = (0..13)
        .map(|i| draft("token.created", &format!("token:{i}")))
        .collect();
    store.append_audit(&drafts, t0()).expect("append");
    let cp = store
        .audit_sign_head(t0())
        .expect("sign")
        .expect("head moved");
    assert_eq!(cp.seq, 13);
    assert!(store.audit_sign_head(t0()).expect("sign again").is_none());
    let latest = store
        .audit_latest_checkpoint()
        .expect("latest")
        .expect("one");
    assert_eq!(latest, cp);
    assert_eq!(
        store
            .audit_checkpoints_after(0, 10)
            .expect("after")
            .iter()
            .map(|c| c.seq)
            .collect::<Vec<_>>(),
        [10, 13]
    );
    let mut verifier =
        ChainVerifier::new(Some(key), store.audit_checkpoints().expect("cps")).require_every(10);
    store
        .audit_scan(&mut |seq, body, hash| {
            verifier.feed(seq, body, hash);
            true
        })
        .expect("scan");
    let report = verifier.finish(store.audit_head().expect("head"));
    assert!(report.ok, "{report:?}");
    assert_eq!(report.signed_heads_verified, 2);
}

/// `audit_events` pages through the chain by sequence number, oldest first.
pub fn audit_events_pages_by_sequence_number(make: &MakeStore) {
    let store = make(None);
    assert!(store.audit_events(0, 10).expect("events").is_empty());
    assert_eq!(store.audit_head().expect("head"), None);
    let drafts: Vec<AuditDraft> = (0..25)
        .map(|i| draft("token.created", &format!("token:{i}")))
        .collect();
    store.append_audit(&drafts, t0()).expect("append");
    let mut seen = Vec::new();
    let mut since = 0;
    loop {
        let page = store.audit_events(since, 10).expect("events");
        if page.is_empty() {
            break;
        }
        assert!(page.len() <= 10);
        since = page.last().map(|e| e.seq).unwrap_or(since);
        seen.extend(page);
    }
    assert_eq!(
        seen.iter().map(|e| e.seq).collect::<Vec<_>>(),
        (1..=25).collect::<Vec<_>>()
    );
    assert_eq!(seen[24].to_event().expect("event").subject, "token:24");
    let mut scanned = Vec::new();
    store
        .audit_scan(&mut |seq, body, hash| {
            scanned.push((seq, body.to_vec(), hash.to_vec()));
            true
        })
        .expect("scan");
    assert_eq!(
        scanned,
        seen.iter()
            .map(|e| (e.seq, e.body.clone(), e.hash.to_vec()))
            .collect::<Vec<_>>()
    );
    assert_eq!(store.audit_head().expect("head"), Some(25));
}

/// The scan stops at the first `false` from the visitor.
pub fn audit_scan_stops_when_the_visitor_says_so(make: &MakeStore) {
    let store = make(None);
    let drafts: Vec<AuditDraft> = (0..30).map(|i| draft("x", &format!("s{i}"))).collect();
    store.append_audit(&drafts, t0()).expect("append");
    let mut visited = 0;
    store
        .audit_scan(&mut |seq, _, _| {
            visited += 1;
            seq < 7
        })
        .expect("scan");
    assert_eq!(visited, 7);
    // The store is still usable after an abandoned scan.
    store.append_audit(&drafts[..1], t0()).expect("append");
    assert_eq!(store.audit_head().expect("head"), Some(31));
}

/// Tokens read back exactly; a second token with the same hash is `Duplicate`.
pub fn tokens_round_trip_and_duplicates_are_refused(make: &MakeStore) {
    let store = make(None);
    let token = TokenRecord {
        hash: [7u8; 32],
        user: user("deploy-bot"),
        groups: vec![
            GroupName::parse("sre").expect("valid"),
            GroupName::parse("payments").expect("valid"),
        ],
        admin: true,
        created_by: "alice".into(),
        created_at: t0(),
        expires_at: t0() + Duration::days(30),
        revoked: false,
        mfa: true,
        parent: None,
        last_used_at: None,
    };
    store
        .insert_token(&token, &draft("token.created", "token:deploy-bot"), t0())
        .expect("insert");
    assert_eq!(
        store.find_token(&token.hash).expect("find"),
        Some(token.clone())
    );
    assert_eq!(store.find_token(&[8u8; 32]).expect("find"), None);
    let err = store
        .insert_token(&token, &draft("token.created", "again"), t0())
        .unwrap_err();
    assert!(matches!(err, StoreError::Duplicate(_)), "{err:?}");
    assert_eq!(head(&*store), 1);
    // Revoking (logout) flips the flag once, with one audit event.
    let revoke = draft("token.revoked", "token:deploy-bot");
    assert!(store
        .revoke_token(&token.hash, &revoke, t0())
        .expect("revoke"));
    assert!(!store
        .revoke_token(&token.hash, &revoke, t0())
        .expect("again"));
    assert!(!store
        .revoke_token(&[8u8; 32], &revoke, t0())
        .expect("unknown"));
    assert!(
        store
            .find_token(&token.hash)
            .expect("find")
            .expect("kept")
            .revoked
    );
    assert_eq!(head(&*store), 2);
}

fn token(hash: u8, name: &str, parent: Option<[u8; 32]>) -> TokenRecord {
    TokenRecord {
        hash: [hash; 32],
        user: user(name),
        groups: vec![],
        admin: false,
        created_by: "admin".into(),
        created_at: t0() + Duration::seconds(hash.into()),
        expires_at: t0() + Duration::days(1),
        revoked: false,
        mfa: false,
        parent,
        last_used_at: None,
    }
}

/// A web session made from a token is revoked together with it, in one audit event.
pub fn revoking_a_token_ends_the_sessions_started_from_it(make: &MakeStore) {
    let store = make(None);
    let parent = token(1, "alice", None);
    let session = token(2, "alice", Some(parent.hash));
    let other = token(3, "alice", None);
    for t in [&parent, &session, &other] {
        store
            .insert_token(t, &draft("token.created", "user:alice"), t0())
            .expect("insert");
    }
    assert_eq!(
        store
            .find_token(&session.hash)
            .expect("find")
            .expect("kept")
            .parent,
        Some(parent.hash)
    );
    assert!(store
        .revoke_token(&parent.hash, &draft("token.revoked", "user:alice"), t0())
        .expect("revoke"));
    assert!(
        store
            .find_token(&session.hash)
            .expect("find")
            .expect("kept")
            .revoked
    );
    assert!(
        !store
            .find_token(&other.hash)
            .expect("find")
            .expect("kept")
            .revoked
    );
    assert_eq!(head(&*store), 4, "three creations and one revocation");
    let last = store.audit_events(3, 10).expect("events");
    let body = String::from_utf8(last[0].body.clone()).expect("utf8");
    assert!(body.contains(r#""sessions_ended":1"#), "{body}");
}

/// Listing shows live tokens only (newest first), filtered by user, with their last use.
pub fn token_list_shows_live_tokens_and_last_use(make: &MakeStore) {
    let store = make(None);
    let mut expired = token(4, "bob", None);
    expired.expires_at = t0();
    for t in [
        &token(1, "alice", None),
        &token(2, "bob", None),
        &token(3, "alice", None),
        &expired,
    ] {
        store
            .insert_token(t, &draft("token.created", "user"), t0())
            .expect("insert");
    }
    store
        .revoke_token(&[3u8; 32], &draft("token.revoked", "user"), t0())
        .expect("revoke");
    let now = t0() + Duration::minutes(1);
    let all = store
        .list_tokens(&TokenFilter::default(), now)
        .expect("list");
    assert_eq!(
        all.iter().map(|t| t.hash[0]).collect::<Vec<_>>(),
        vec![2, 1]
    );
    let alice = store
        .list_tokens(
            &TokenFilter {
                user: Some(user("alice")),
                ..Default::default()
            },
            now,
        )
        .expect("list");
    assert_eq!(alice.iter().map(|t| t.hash[0]).collect::<Vec<_>>(), vec![1]);
    let first = store
        .list_tokens(
            &TokenFilter {
                limit: 1,
                ..Default::default()
            },
            now,
        )
        .expect("page 1");
    assert_eq!(first.iter().map(|t| t.hash[0]).collect::<Vec<_>>(), vec![2]);
    let rest = store
        .list_tokens(
            &TokenFilter {
                after: Some((first[0].created_at, first[0].hash)),
                limit: 1,
                ..Default::default()
            },
            now,
        )
        .expect("page 2");
    assert_eq!(
        rest.iter().map(|t| t.hash[0]).collect::<Vec<_>>(),
        vec![1],
        "the cursor continues after the last token of the previous page"
    );
    store.touch_token(&[1u8; 32], now).expect("touch");
    assert_eq!(
        store
            .find_token(&[1u8; 32])
            .expect("find")
            .expect("kept")
            .last_used_at,
        Some(now)
    );
    assert_eq!(all[0].prefix(), "02020202");
}

/// The first identity to present a name keeps it; another identity presenting
/// it is refused until the binding is removed.
pub fn an_identity_binds_its_name_once_and_others_are_refused(make: &MakeStore) {
    use crate::BindOutcome;
    let store = make(None);
    let bound = draft("identity.bound", "user:alice");
    let alice = user("alice");
    assert_eq!(
        store
            .bind_identity("https://idp", "sub-1", &alice, &bound, t0())
            .expect("bind"),
        BindOutcome::Bound
    );
    // The same identity presenting another name keeps the name it was bound to.
    assert_eq!(
        store
            .bind_identity("https://idp", "sub-1", &user("root"), &bound, t0())
            .expect("bind"),
        BindOutcome::Existing(alice.clone())
    );
    assert_eq!(
        store
            .bind_identity("https://idp", "sub-2", &alice, &bound, t0())
            .expect("bind"),
        BindOutcome::Taken {
            issuer: "https://idp".into(),
            subject: "sub-1".into()
        }
    );
    assert_eq!(
        store
            .bind_identity("https://other-idp", "sub-1", &alice, &bound, t0())
            .expect("bind"),
        BindOutcome::Taken {
            issuer: "https://idp".into(),
            subject: "sub-1".into()
        },
        "the subject is only unique per issuer"
    );
    assert_eq!(head(&*store), 1, "only the new binding is audited here");
    let rebind = draft("user.rebound", "user:alice");
    assert!(store
        .unbind_identity(&alice, &rebind, t0())
        .expect("unbind"));
    assert!(!store.unbind_identity(&alice, &rebind, t0()).expect("again"));
    assert_eq!(
        store
            .bind_identity("https://idp", "sub-2", &alice, &bound, t0())
            .expect("bind"),
        BindOutcome::Bound
    );
    assert_eq!(head(&*store), 3);
}

/// Locks are listed until removed or past their end; removing writes one audit event.
pub fn locks_hold_until_removed_or_expired(make: &MakeStore) {
    use crate::{Lock, LockKind};
    let store = make(None);
    let lock = |kind, name: &str, expires_at| Lock {
        kind,
        name: name.into(),
        reason: "INC-1".into(),
        created_by: "admin".into(),
        created_at: t0(),
        expires_at,
    };
    let d = draft("lock.created", "user:mallory");
    store
        .put_lock(&lock(LockKind::User, "mallory", None), &d, t0())
        .expect("lock");
    store
        .put_lock(
            &lock(LockKind::User, "eve", Some(t0() + Duration::hours(1))),
            &d,
            t0(),
        )
        .expect("lock");
    store
        .put_lock(
            &lock(LockKind::Entitlement, "payments-db-write", None),
            &d,
            t0(),
        )
        .expect("lock");
    // Locking again replaces the reason.
    let mut again = lock(LockKind::User, "mallory", None);
    again.reason = "INC-2".into();
    store.put_lock(&again, &d, t0()).expect("relock");
    let now = t0() + Duration::minutes(1);
    let names = |locks: Vec<Lock>| {
        locks
            .into_iter()
            .map(|l| (l.kind, l.name, l.reason))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        names(store.locks(now).expect("locks")),
        vec![
            (
                LockKind::Entitlement,
                "payments-db-write".into(),
                "INC-1".into()
            ),
            (LockKind::User, "eve".into(), "INC-1".into()),
            (LockKind::User, "mallory".into(), "INC-2".into()),
        ]
    );
    let later = t0() + Duration::hours(2);
    assert_eq!(
        store.locks(later).expect("locks").len(),
        2,
        "eve's lock ended by itself"
    );
    let removed = draft("lock.removed", "user:mallory");
    assert!(store
        .remove_lock(LockKind::User, "mallory", &removed, later)
        .expect("unlock"));
    assert!(!store
        .remove_lock(LockKind::User, "mallory", &removed, later)
        .expect("again"));
    assert!(!store
        .remove_lock(LockKind::User, "eve", &removed, later)
        .expect("expired"));
    assert_eq!(store.locks(later).expect("locks").len(), 1);
    assert_eq!(head(&*store), 5);
}

/// `visible_to` keeps one's own requests and those of reviewable
/// entitlements; `after` continues a page exactly where the last one ended.
pub fn list_scopes_to_what_a_principal_may_read_and_pages_by_cursor(make: &MakeStore) {
    let store = make(None);
    let ents = ["db-read", "db-write", "k8s-admin"];
    let mut made = vec![];
    for n in 0..6u32 {
        // Two requests per minute: ties on created_at are broken by id.
        let mut r = sample(n, t0() + Duration::minutes(i64::from(n / 2)));
        r.requester = user(if n % 2 == 0 { "alice" } else { "bob" });
        r.entitlement = EntitlementName::parse(ents[n as usize % 3]).expect("valid");
        create(&*store, &r, t0());
        made.push(r);
    }
    let list = |f: RequestFilter| -> Vec<String> {
        store
            .list_requests(&f)
            .expect("list")
            .iter()
            .map(|r| r.id.to_string())
            .collect()
    };
    let ids = |ns: &[u32]| ns.iter().map(|n| rid(*n).to_string()).collect::<Vec<_>>();
    assert_eq!(
        list(RequestFilter {
            visible_to: Some((user("alice"), vec!["db-write".into()])),
            ..Default::default()
        }),
        ids(&[4, 2, 0, 1]),
        "alice's own (0, 2, 4) and db-write's (1, 4); 0 and 1 share a minute, so by id"
    );
    assert!(list(RequestFilter {
        visible_to: Some((user("carol"), vec![])),
        ..Default::default()
    })
    .is_empty());
    // Page through everything two at a time.
    let mut seen = vec![];
    let mut after = None;
    loop {
        let page = store
            .list_requests(&RequestFilter {
                after: after.clone(),
                limit: 2,
                ..Default::default()
            })
            .expect("page");
        if page.is_empty() {
            break;
        }
        let last = page.last().expect("non-empty");
        after = Some((last.created_at, last.id.clone()));
        seen.extend(page.iter().map(|r| r.id.to_string()));
    }
    assert_eq!(seen, ids(&[4, 5, 2, 3, 0, 1]));
}

/// Counts cover every state, zeros included.
pub fn count_by_state_reports_every_state(make: &MakeStore) {
    let store = make(None);
    for (n, st) in [
        RequestState::Pending,
        RequestState::Pending,
        RequestState::Active,
    ]
    .into_iter()
    .enumerate()
    {
        let mut r = sample(n as u32, t0());
        r.state = st;
        create(&*store, &r, t0());
    }
    let counts = store.count_by_state().expect("counts");
    assert_eq!(counts.len(), RequestState::ALL.len());
    for (st, c) in counts {
        let want = match st {
            RequestState::Pending => 2,
            RequestState::Active => 1,
            _ => 0,
        };
        assert_eq!(c, want, "{st}");
    }
}

/// Break-glass requests with an open post-incident review are listed and
/// counted whatever their state; closed ones and ordinary requests are not.
pub fn open_post_reviews_are_listed_and_counted_in_any_state(make: &MakeStore) {
    let store = make(None);
    for (n, breakglass, closed, st) in [
        (0, true, false, RequestState::Active),
        (1, true, false, RequestState::Revoked),
        (2, true, true, RequestState::Active),
        (3, false, false, RequestState::Pending),
    ] {
        let mut r = sample(n, t0() + Duration::seconds(n.into()));
        r.breakglass = breakglass;
        r.post_review_closed = closed;
        r.state = st;
        create(&*store, &r, t0());
    }
    let open: Vec<String> = store
        .list_requests(&RequestFilter {
            open_post_review: true,
            ..Default::default()
        })
        .expect("list")
        .into_iter()
        .map(|r| r.id.to_string())
        .collect();
    assert_eq!(open, vec![rid(1).to_string(), rid(0).to_string()]);
    assert_eq!(store.count_open_post_reviews().expect("count"), 2);
}

/// Only active grants whose window ended count as overdue.
pub fn overdue_grants_are_active_ones_past_not_after(make: &MakeStore) {
    let store = make(None);
    let now = t0() + Duration::hours(1);
    for (n, st, not_after) in [
        (0, RequestState::Active, Some(now - Duration::seconds(5))),
        (1, RequestState::Active, Some(now + Duration::seconds(5))),
        (2, RequestState::Expired, Some(now - Duration::seconds(5))),
        (3, RequestState::Active, Some(now - Duration::minutes(30))),
        (4, RequestState::Pending, None),
    ] {
        let mut r = sample(n, t0() + Duration::seconds(n.into()));
        r.state = st;
        r.not_before = not_after.map(|t| t - Duration::minutes(10));
        r.not_after = not_after;
        create(&*store, &r, t0());
    }
    assert_eq!(store.count_overdue_grants(now).expect("count"), 2);
    assert_eq!(store.count_overdue_grants(t0()).expect("count"), 0);
}

/// A gateway session: started with its event, recorded in order, watched
/// (lease renewed, termination and grant state seen), ended exactly once,
/// and found abandoned only when its lease ran out while open.
pub fn gateway_sessions_record_watch_and_end_once(make: &MakeStore) {
    use crate::sessions::{SessionEnd, SessionFilter};
    use airlock_core::session::{EndReason, Session, SessionId, SessionKind};
    let store = make(None);
    let mut r = sample(0, t0());
    r.state = RequestState::Active;
    create(&*store, &r, t0());
    let session = |n: u32, at: OffsetDateTime| Session {
        id: SessionId::parse(&format!("ses_{n:08}")).expect("valid id"),
        request_id: r.id.clone(),
        entitlement: r.entitlement.clone(),
        user: user("alice"),
        kind: SessionKind::Postgres,
        replica: "replica-a".into(),
        started_at: at,
        ended_at: None,
        bytes_up: 0,
        bytes_down: 0,
        end_reason: None,
        recording_sha256: None,
        terminate_requested: None,
        lease_until: at + Duration::seconds(30),
    };
    let (a, b) = (session(1, t0()), session(2, t0() + Duration::seconds(1)));
    let before = head(&*store);
    for s in [&a, &b] {
        store
            .start_session(
                s,
                &draft("session.started", &format!("session:{}", s.id)),
                s.started_at,
            )
            .expect("start");
    }
    assert_eq!(head(&*store), before + 2);
    assert!(matches!(
        store.start_session(&a, &draft("session.started", "x"), t0()),
        Err(StoreError::Duplicate(_))
    ));
    assert_eq!(head(&*store), before + 2, "a refused start writes no event");
    assert_eq!(store.get_session(&a.id).expect("get"), Some(a.clone()));

    // Chunks come back in seq order whatever the insert order; a repeat is ignored.
    for (seq, body) in [(1, &b"world\n"[..]), (0, b"hello "), (1, b"again")] {
        store.append_recording(&a.id, seq, body).expect("append");
    }
    assert_eq!(
        store.session_recording(&a.id).expect("recording"),
        b"hello world\n"
    );
    assert!(store
        .session_recording(&b.id)
        .expect("recording")
        .is_empty());

    // Watching renews leases and reports what the holder must act on.
    let ids = vec![a.id.to_string(), b.id.to_string()];
    let later = t0() + Duration::minutes(5);
    assert!(store
        .request_session_terminate(
            &b.id,
            "bob",
            &draft("session.terminate_requested", "x"),
            t0()
        )
        .expect("terminate"));
    let mut seen = store.watch_sessions(&ids, Some(later)).expect("watch");
    seen.sort_by(|x, y| x.id.cmp(&y.id));
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[0].terminate_requested, None);
    assert_eq!(seen[1].terminate_requested.as_deref(), Some("bob"));
    assert!(seen.iter().all(|w| w.request_state == RequestState::Active));
    assert_eq!(
        store
            .get_session(&a.id)
            .expect("get")
            .expect("a")
            .lease_until,
        later
    );
    assert!(store
        .abandoned_sessions(later - Duration::seconds(1), 10)
        .expect("abandoned")
        .is_empty());

    let end = SessionEnd {
        reason: EndReason::ClientClosed,
        bytes_up: 12,
        bytes_down: 3_000_000_000,
        recording_sha256: "ab".repeat(32),
    };
    let at_end = t0() + Duration::minutes(2);
    assert!(store
        .end_session(&a.id, &end, &draft("session.ended", "x"), at_end)
        .expect("end"));
    let h = head(&*store);
    assert!(!store
        .end_session(&a.id, &end, &draft("session.ended", "x"), at_end)
        .expect("end"));
    assert_eq!(head(&*store), h, "a second end writes no event");
    assert!(!store
        .request_session_terminate(
            &a.id,
            "bob",
            &draft("session.terminate_requested", "x"),
            t0()
        )
        .expect("terminate"));
    let got = store.get_session(&a.id).expect("get").expect("a");
    assert_eq!(got.ended_at, Some(at_end));
    assert_eq!(got.end_reason, Some(EndReason::ClientClosed));
    assert_eq!((got.bytes_up, got.bytes_down), (12, 3_000_000_000));
    assert_eq!(got.recording_sha256, Some("ab".repeat(32)));

    // Only b is open; once its lease ran out it is abandoned.
    let open = store
        .list_sessions(&SessionFilter {
            open: true,
            ..Default::default()
        })
        .expect("list");
    assert_eq!(
        open.iter().map(|s| s.id.clone()).collect::<Vec<_>>(),
        vec![b.id.clone()]
    );
    let all = store
        .list_sessions(&SessionFilter {
            request: Some(r.id.clone()),
            ..Default::default()
        })
        .expect("list");
    assert_eq!(
        all.iter().map(|s| s.id.clone()).collect::<Vec<_>>(),
        vec![b.id.clone(), a.id.clone()]
    );
    let none = store
        .list_sessions(&SessionFilter {
            scope: Some((user("bob"), vec![])),
            ..Default::default()
        })
        .expect("list");
    assert!(none.is_empty(), "bob neither made nor reviews these");
    let mine = store
        .list_sessions(&SessionFilter {
            scope: Some((user("alice"), vec![])),
            ..Default::default()
        })
        .expect("list");
    assert_eq!(mine.len(), 2);
    let reviews = store
        .list_sessions(&SessionFilter {
            scope: Some((user("bob"), vec![r.entitlement.to_string()])),
            replica: Some("replica-a".into()),
            ..Default::default()
        })
        .expect("list");
    assert_eq!(reviews.len(), 2);
    let elsewhere = store
        .list_sessions(&SessionFilter {
            replica: Some("replica-b".into()),
            ..Default::default()
        })
        .expect("list");
    assert!(elsewhere.is_empty());
    let unrenewed = store.watch_sessions(&ids, None).expect("watch");
    assert_eq!(unrenewed.len(), 2);
    let gone = store
        .abandoned_sessions(later + Duration::seconds(1), 10)
        .expect("abandoned");
    assert_eq!(
        gone.iter().map(|s| s.id.clone()).collect::<Vec<_>>(),
        vec![b.id.clone()]
    );
}

/// A healthy store answers `ping`.
pub fn ping_succeeds(make: &MakeStore) {
    make(None).ping().expect("ping");
}
