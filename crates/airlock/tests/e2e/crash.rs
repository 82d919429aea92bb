//! Crash safety: `kill -9` between the provider call and the outcome record.

use std::time::{Duration, Instant};

use crate::both_stores;
use crate::kit::*;

both_stores!(
    kill_9_between_provider_call_and_outcome_loses_and_duplicates_nothing,
    |db| {
        let mut setup = Setup::new(db);
        setup.env = vec![("AIRLOCK_FAULT".into(), "pause-after-provider-apply".into())];
        let mut s = Server::start(setup);
        let (alice, bob) = (s.token("alice"), s.token("bob"));
        let id = id_of(&s.json(
            &alice,
            &[
                "request",
                "payments-db-write",
                "--for",
                "40s",
                "--reason",
                "INC-77",
            ],
        ));
        s.json(&bob, &["review", &id, "--approve"]);
        let role = format!("{}{id}", s.role_prefix);
        let deadline = Instant::now() + Duration::from_secs(15);
        while !role_exists(&role) {
            assert!(
                Instant::now() < deadline,
                "provider never applied; log: {}",
                s.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        // The role exists but the outcome is not recorded yet: crash now.
        assert_eq!(s.json(&alice, &["show", &id])["state"], "approved");
        s.kill9();
        let before = s.offline(&["audit", "verify", "--output", "json"]);
        assert!(before.status.success(), "{}", stderr(&before));

        s.set_env(vec![]);
        s.boot();
        let r = s.wait_for(&alice, &id, 30, |r| r["state"] == "active");
        let not_after = r["not_after"].as_str().unwrap().to_string();
        assert!(role_exists(&role));
        let r = s.wait_for(&alice, &id, 40, |r| {
            r["state"] == "expired" && r["grant"]["phase"] == "removed"
        });
        assert_eq!(
            r["not_after"].as_str().unwrap(),
            not_after,
            "the window does not move"
        );
        assert!(!role_exists(&role), "no orphaned role");
        let kinds = s.audit_kinds(&format!("request:{id}"));
        assert_eq!(
            kinds,
            [
                "request.created",
                "request.reviewed",
                "request.approved",
                "grant.applied",
                "request.expired",
                "grant.removed"
            ],
            "each transition audited exactly once"
        );
        let v = s.json(&s.admin, &["audit", "verify"]);
        assert_eq!(v["ok"], true, "{v}");
    }
);

#[test]
fn grant_ends_at_not_after_even_if_server_is_down() {
    let mut s = Server::start(Setup::new(Db::Sqlite));
    let (alice, bob) = (s.token("alice"), s.token("bob"));
    let id = s.active_grant(&alice, &bob, "3s", "INC-5");
    let c = s.json(&alice, &["credentials", &id]);
    let (user, pw) = (
        c["username"].as_str().unwrap().to_string(),
        c["password"].as_str().unwrap().to_string(),
    );
    login(&user, &pw, "postgres").expect("works while active");
    assert!(
        login(&user, "wrong-password", "postgres").is_err(),
        "the test cluster must enforce passwords (use ./scripts/test)"
    );
    s.kill9();
    std::thread::sleep(Duration::from_secs(4));
    let err =
        login(&user, &pw, "postgres").expect_err("VALID UNTIL ends the login with airlock down");
    assert!(
        role_exists(&user),
        "airlock is down, so only native expiry acted: {err}"
    );
    s.boot();
    s.wait_for(&alice, &id, 10, |r| {
        r["state"] == "expired" && r["grant"]["phase"] == "removed"
    });
    assert!(!role_exists(&user));
}
