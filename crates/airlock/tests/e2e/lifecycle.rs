//! The request lifecycle through the CLI, on both stores.

use std::time::Duration;

use crate::both_stores;
use crate::kit::*;

both_stores!(full_lifecycle_ends_with_login_refused_after_expiry, |db| {
    let s = Server::start(Setup::new(db));
    let (alice, bob) = (s.token("alice"), s.token("bob"));
    let r = s.json(
        &alice,
        &[
            "request",
            "payments-db-write",
            "--for",
            "4s",
            "--reason",
            "INC-42 fix ledger",
        ],
    );
    let id = id_of(&r);
    assert_eq!(r["state"], "pending");
    assert_eq!(r["requested_duration"], 4);

    let own = s.cli(&alice, &["review", &id, "--approve"]);
    assert_eq!(own.status.code(), Some(1));
    assert!(
        stderr(&own).contains("cannot review your own request"),
        "{}",
        stderr(&own)
    );

    let r = s.json(&bob, &["review", &id, "--approve", "--comment", "ok"]);
    assert_eq!(r["reviews"][0]["reviewer"], "bob");
    let r = s.wait_for(&alice, &id, 10, |r| r["state"] == "active");
    assert!(r["not_after"].as_str().unwrap().ends_with('Z'));

    let creds = s.json(&alice, &["credentials", &id]);
    let user = creds["username"].as_str().unwrap().to_string();
    let pw = creds["password"].as_str().unwrap().to_string();
    assert_eq!(user, format!("{}{id}", s.role_prefix));
    login(&user, &pw, creds["database"].as_str().unwrap()).expect("login works while active");
    let other = s.cli(&bob, &["credentials", &id]);
    assert_eq!(
        other.status.code(),
        Some(1),
        "only the requester reads credentials"
    );

    let r = s.wait_for(&alice, &id, 10, |r| {
        r["state"] == "expired" && r["grant"]["phase"] == "removed"
    });
    let not_after = time::OffsetDateTime::parse(
        r["not_after"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    assert!(time::OffsetDateTime::now_utc() - not_after < time::Duration::seconds(3));
    assert!(!role_exists(&user));
    assert!(login(&user, &pw, "postgres").is_err());

    let kinds = s.audit_kinds(&format!("request:{id}"));
    assert_eq!(
        kinds,
        [
            "request.created",
            "request.reviewed",
            "request.approved",
            "grant.applied",
            "credential.read",
            "request.expired",
            "grant.removed"
        ]
    );
    let export = s.cli(&s.admin, &["audit", "export"]);
    let read = String::from_utf8_lossy(&export.stdout)
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|e| e["kind"] == "credential.read")
        .expect("reading credentials is audited");
    assert_eq!(read["actor"], "alice");
    assert_eq!(read["data"]["entitlement"], "payments-db-write");
    assert!(!read.to_string().contains(&pw), "never the secret");
    let v = s.json(&s.admin, &["audit", "verify"]);
    assert_eq!(v["ok"], true, "{v}");
});

both_stores!(revoke_ends_access_now_and_only_for_allowed_people, |db| {
    let s = Server::start(Setup::new(db));
    let (alice, bob, carol) = (s.token("alice"), s.token("bob"), s.token("carol"));
    let id = s.active_grant(&alice, &bob, "30m", "CHG-7");
    let user = format!("{}{id}", s.role_prefix);
    assert!(role_exists(&user));

    let refused = s.cli(&carol, &["revoke", &id]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(stderr(&refused).contains("403"), "{}", stderr(&refused));

    let r = s.json(&alice, &["revoke", &id]);
    assert_eq!(r["state"], "revoked");
    s.wait_for(&alice, &id, 10, |r| r["grant"]["phase"] == "removed");
    assert!(!role_exists(&user));
    let again = s.cli(&alice, &["revoke", &id]);
    assert!(
        stderr(&again).contains("current state: revoked"),
        "{}",
        stderr(&again)
    );
});

both_stores!(deny_withdraw_and_lapse_end_pending_requests, |db| {
    let s = Server::start(Setup::new(db));
    let (alice, bob, carol) = (s.token("alice"), s.token("bob"), s.token("carol"));

    let id = id_of(&s.json(
        &alice,
        &[
            "request",
            "payments-db-write",
            "--for",
            "5m",
            "--reason",
            "INC-1",
        ],
    ));
    let r = s.json(
        &bob,
        &["review", &id, "--deny", "--comment", "use the runbook"],
    );
    assert_eq!(r["state"], "denied");

    let id = id_of(&s.json(
        &alice,
        &[
            "request",
            "payments-db-write",
            "--for",
            "5m",
            "--reason",
            "INC-2",
        ],
    ));
    let out = s.cli(&bob, &["withdraw", &id]);
    assert!(
        stderr(&out).contains("only the requester"),
        "{}",
        stderr(&out)
    );
    assert_eq!(s.json(&alice, &["withdraw", &id])["state"], "withdrawn");

    // Two of M: carol's approval alone is not enough; then the window (2s) lapses.
    let id = id_of(&s.json(&alice, &["request", "two-person", "--for", "5m"]));
    let r = s.json(&carol, &["review", &id, "--approve"]);
    assert_eq!(r["state"], "pending");
    let again = s.cli(&carol, &["review", &id, "--approve"]);
    assert!(
        stderr(&again).contains("already reviewed"),
        "{}",
        stderr(&again)
    );
    s.wait_for(&alice, &id, 10, |r| r["state"] == "lapsed");

    let kinds = s.audit_kinds(&format!("request:{id}"));
    assert_eq!(
        kinds,
        ["request.created", "request.reviewed", "request.lapsed"]
    );
    let queue = s.json(&bob, &["list", "--to-review"]);
    assert_eq!(queue.as_array().unwrap().len(), 0);
});

both_stores!(two_of_m_approves_after_second_distinct_reviewer, |db| {
    let s = Server::start(Setup::new(db));
    let (alice, bob, carol) = (s.token("alice"), s.token("bob"), s.token("carol"));
    let id = id_of(&s.json(&alice, &["request", "two-person", "--for", "1m"]));
    let queue = s.json(&bob, &["list", "--to-review"]);
    assert_eq!(queue[0]["id"], id.as_str());
    s.json(&bob, &["review", &id, "--approve"]);
    let r = s.json(&carol, &["review", &id, "--approve"]);
    assert_eq!(r["state"], "approved");
    s.wait_for(&alice, &id, 10, |r| r["state"] == "active");
});

both_stores!(
    breakglass_is_active_at_once_loud_and_reviewed_by_someone_else,
    |db| {
        let s = Server::start(Setup::new(db));
        let (alice, bob) = (s.token("alice"), s.token("bob"));
        let no_reason = s.cli(
            &alice,
            &[
                "breakglass",
                "payments-breakglass",
                "--for",
                "5m",
                "--reason",
                "",
            ],
        );
        assert_eq!(no_reason.status.code(), Some(1));
        assert!(
            stderr(&no_reason).contains("reason"),
            "{}",
            stderr(&no_reason)
        );
        let wrong = s.cli(
            &alice,
            &[
                "request",
                "payments-breakglass",
                "--for",
                "5m",
                "--reason",
                "x",
            ],
        );
        assert!(
            stderr(&wrong).contains("airlock breakglass"),
            "{}",
            stderr(&wrong)
        );

        let r = s.json(
            &alice,
            &[
                "breakglass",
                "payments-breakglass",
                "--for",
                "5m",
                "--reason",
                "db on fire",
                "--wait",
            ],
        );
        assert_eq!(r["state"], "active");
        assert_eq!(r["breakglass"], true);
        assert_eq!(r["post_review_closed"], false);
        let id = id_of(&r);
        let kinds = s.audit_kinds(&format!("request:{id}"));
        assert_eq!(
            kinds,
            ["request.created", "breakglass.activated", "grant.applied"]
        );
        assert!(
            s.log_text().contains("BREAK-GLASS"),
            "loud log line expected"
        );

        let own = s.cli(&alice, &["review", &id, "--approve"]);
        assert_eq!(own.status.code(), Some(1));
        let r = s.json(
            &bob,
            &["review", &id, "--approve", "--comment", "justified"],
        );
        assert_eq!(r["post_review_closed"], true);
        assert_eq!(
            r["state"], "active",
            "closing the review does not end the grant"
        );
        let twice = s.cli(&bob, &["review", &id, "--approve"]);
        assert!(
            stderr(&twice).contains("already closed"),
            "{}",
            stderr(&twice)
        );
    }
);

both_stores!(drift_outside_airlock_is_removed_and_audited, |db| {
    let s = Server::start(Setup::new(db));
    let alice = s.token("alice");
    let bob = s.token("bob");
    let id = s.active_grant(&alice, &bob, "10m", "INC-3");
    let rogue = format!("{}zzzzzzzzzzzzzzzz", s.role_prefix);
    let odd = format!("{}not-an-id", s.role_prefix);
    pg().batch_execute(&format!("CREATE ROLE {rogue} LOGIN; CREATE ROLE \"{odd}\""))
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while role_exists(&rogue) || role_exists(&odd) {
        assert!(
            std::time::Instant::now() < deadline,
            "drift not removed; log: {}",
            s.log_text()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        role_exists(&format!("{}{id}", s.role_prefix)),
        "a backed grant is kept"
    );
    // The role is dropped before its `drift.removed` event is committed.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let drift = s.audit_kinds("provider:pg-main");
        if drift.iter().filter(|k| *k == "drift.removed").count() >= 2 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{drift:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
});

#[test]
fn two_replicas_on_one_postgres_store_apply_each_grant_once() {
    let a = Server::start(Setup::new(Db::Postgres));
    let b = a.replica();
    let (alice, bob) = (a.token("alice"), a.token("bob"));
    let mut ids = vec![];
    for i in 0..6 {
        let s = if i % 2 == 0 { &a } else { &b };
        let id = id_of(&s.json(
            &alice,
            &[
                "request",
                "payments-db-write",
                "--for",
                "3s",
                "--reason",
                "INC-9",
            ],
        ));
        s.json(&bob, &["review", &id, "--approve"]);
        ids.push(id);
    }
    for id in &ids {
        a.wait_for(&alice, id, 20, |r| {
            r["state"] == "expired" && r["grant"]["phase"] == "removed"
        });
        let kinds = a.audit_kinds(&format!("request:{id}"));
        assert_eq!(
            kinds.iter().filter(|k| *k == "grant.applied").count(),
            1,
            "{kinds:?}"
        );
        assert_eq!(
            kinds.iter().filter(|k| *k == "request.expired").count(),
            1,
            "{kinds:?}"
        );
    }
    assert_eq!(a.json(&a.admin, &["audit", "verify"])["ok"], true);
}

/// Open post-incident reviews: the `airlock_breakglass_open_reviews` gauge line.
fn open_reviews_gauge(s: &Server) -> String {
    let (_, _, m) = s.http("GET", "/metrics", None, None);
    m.as_str()
        .unwrap()
        .lines()
        .find(|l| l.starts_with("airlock_breakglass_open_reviews "))
        .unwrap_or("missing")
        .to_string()
}

fn to_review(s: &Server, token: &str) -> Vec<String> {
    s.json(token, &["list", "--to-review"])
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_string())
        .collect()
}

both_stores!(
    post_incident_review_waits_in_the_reviewers_queue_until_closed,
    |db| {
        let s = Server::start(Setup::new(db));
        let (alice, bob, carol) = (s.token("alice"), s.token("bob"), s.token("carol"));
        assert_eq!(open_reviews_gauge(&s), "airlock_breakglass_open_reviews 0");
        let r = s.json(
            &alice,
            &[
                "breakglass",
                "payments-breakglass",
                "--for",
                "5m",
                "--reason",
                "INC-9 db on fire",
                "--wait",
            ],
        );
        let id = id_of(&r);
        assert!(to_review(&s, &bob).contains(&id), "bob reviews it");
        assert!(!to_review(&s, &alice).contains(&id), "never the requester");
        assert!(!to_review(&s, &carol).contains(&id), "carol is no reviewer");
        assert_eq!(open_reviews_gauge(&s), "airlock_breakglass_open_reviews 1");
        // The grant ending does not close the review.
        s.json(&alice, &["revoke", &id]);
        assert!(to_review(&s, &bob).contains(&id), "still open once revoked");
        s.json(
            &bob,
            &["review", &id, "--approve", "--comment", "justified"],
        );
        assert!(!to_review(&s, &bob).contains(&id), "closed: gone");
        assert_eq!(open_reviews_gauge(&s), "airlock_breakglass_open_reviews 0");
    }
);

fn rfc3339(v: &serde_json::Value) -> time::OffsetDateTime {
    time::OffsetDateTime::parse(
        v.as_str().unwrap_or_else(|| panic!("not a time: {v}")),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap()
}

#[test]
fn a_scheduled_request_is_reviewed_at_once_and_goes_active_at_its_start() {
    let mut s = Server::start(Setup::new(Db::Sqlite));
    let (alice, bob) = (s.token("alice"), s.token("bob"));
    let r = s.json(
        &alice,
        &[
            "request",
            "payments-db-write",
            "--for",
            "10m",
            "--start",
            "+3s",
            "--reason",
            "CHG-7 window",
        ],
    );
    let id = id_of(&r);
    assert_eq!(r["state"], "pending");
    let start = rfc3339(&r["not_before"]);
    assert!(r["not_after"].is_null(), "{r}");
    // Approved at once, but nothing exists on the target before the start.
    let approved = s.json(&bob, &["review", &id, "--approve"]);
    assert_eq!(approved["state"], "approved", "{approved}");
    assert_eq!(rfc3339(&approved["not_before"]), start);
    assert_eq!(
        rfc3339(&approved["not_after"]) - start,
        time::Duration::minutes(10),
        "the duration counts from the start"
    );
    std::thread::sleep(Duration::from_millis(1000));
    assert_eq!(s.json(&alice, &["show", &id])["state"], "approved");
    assert!(!role_exists(&format!("{}{id}", s.role_prefix)));
    let active = s.wait_for(&alice, &id, 15, |r| r["state"] == "active");
    assert!(
        time::OffsetDateTime::now_utc() >= start,
        "active before its start: {active}"
    );
    assert!(role_exists(&format!("{}{id}", s.role_prefix)));

    // Bad starts are refused, saying what to write.
    for (start, says) in [
        ("+8d", "max_schedule_ahead"),
        ("next tuesday", "RFC 3339"),
        ("2020-01-01T00:00:00Z", "in the past"),
    ] {
        let out = s.cli(
            &alice,
            &[
                "request",
                "payments-db-write",
                "--for",
                "10m",
                "--start",
                start,
                "--reason",
                "CHG-8",
            ],
        );
        assert!(!out.status.success(), "{start} accepted");
        assert!(stderr(&out).contains(says), "{start}: {}", stderr(&out));
    }
    let (status, _, body) = s.http(
        "POST",
        "/api/v1/breakglass",
        Some(&alice),
        Some(r#"{"entitlement":"payments-breakglass","duration":"5m","reason":"INC-9","start":"+1h"}"#),
    );
    assert_eq!(status, 400, "{body}");
    s.kill9();
}
