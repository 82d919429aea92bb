//! PostgreSQL failover under load: three replicas on the multi-host URL of a
//! primary and a synchronous streaming standby (scripts/setup/pg-ha.sh). The
//! primary is killed with `kill -9`, the standby promoted; every write the API
//! answered 2xx for must survive, each audited exactly once, and the chain
//! must verify.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::kit::*;
use crate::proxy_kit::post_raw;

fn ha(var: &str) -> String {
    std::env::var(var).unwrap_or_else(|_| {
        panic!("{var} is not set: run ./scripts/test (scripts/setup/pg-ha.sh starts the primary and standby)")
    })
}

/// One answered write: when, and whether it was accepted.
struct Answer {
    sent: Instant,
    at: Instant,
    ok: bool,
}

#[test]
fn failover_to_the_synchronous_standby_loses_no_answered_write_and_no_audit_event() {
    let mut setup = Setup::new(Db::Postgres);
    setup.store_url = Some(ha("AIRLOCK_TEST_HA_URL"));
    let s = Server::start(setup);
    let replicas = [s.replica(), s.replica()];
    let all: Vec<&Server> = std::iter::once(&s).chain(replicas.iter()).collect();
    let (alice, bob) = (s.token("alice"), s.token("bob"));

    let stop = AtomicBool::new(false);
    let created: Mutex<Vec<String>> = Mutex::default();
    let approved: Mutex<Vec<String>> = Mutex::default();
    let answers: Mutex<Vec<Answer>> = Mutex::default();
    let mut killed_at = None;
    std::thread::scope(|scope| {
        scope.spawn(|| {
            let mut n = 0usize;
            while !stop.load(Ordering::SeqCst) {
                let r = all[n % all.len()];
                n += 1;
                let body = json!({"entitlement": "payments-db-write", "duration": "10m",
                                  "reason": format!("INC-{n}")});
                let sent = Instant::now();
                let (status, _, v) = post_raw(r, "/api/v1/requests", &alice, &body);
                answers.lock().unwrap().push(Answer {
                    sent,
                    at: Instant::now(),
                    ok: status == 201,
                });
                if status == 201 {
                    let id = v["id"].as_str().unwrap().to_string();
                    created.lock().unwrap().push(id.clone());
                    if n.is_multiple_of(3) {
                        // Reviewed on another replica than the one that created it.
                        let other = all[n % all.len()];
                        let (status, _, _) = post_raw(
                            other,
                            &format!("/api/v1/requests/{id}/reviews"),
                            &bob,
                            &json!({"decision": "approve"}),
                        );
                        if status == 200 {
                            approved.lock().unwrap().push(id);
                        }
                    }
                } else {
                    assert!(
                        status == 503,
                        "only 'unavailable' while the database fails over, got {status}: {v}"
                    );
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        });

        std::thread::sleep(Duration::from_secs(2));
        let primary = ha("AIRLOCK_TEST_HA_PRIMARY_DIR");
        let pid = std::fs::read_to_string(format!("{primary}/postmaster.pid")).unwrap();
        let pid = pid.lines().next().unwrap().trim().to_string();
        assert!(Command::new("kill")
            .args(["-9", &pid])
            .status()
            .unwrap()
            .success());
        killed_at = Some(Instant::now());
        // A failure detector (Patroni, a managed service) takes a moment too.
        std::thread::sleep(Duration::from_millis(500));
        let promoted = Command::new("runuser")
            .args(["-u", &ha("AIRLOCK_TEST_HA_RUN_AS"), "--"])
            .arg(ha("AIRLOCK_TEST_HA_PG_CTL"))
            .args(["-D", &ha("AIRLOCK_TEST_HA_STANDBY_DIR"), "-w", "promote"])
            .output()
            .unwrap();
        assert!(
            promoted.status.success(),
            "promote: {}",
            String::from_utf8_lossy(&promoted.stderr)
        );
        // Keep the load on until writes are accepted again, and a little longer.
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let back = answers
                .lock()
                .unwrap()
                .iter()
                .filter(|a| a.ok && a.at > killed_at.unwrap() + Duration::from_millis(500))
                .count();
            if back >= 20 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "writes never came back; log: {}",
                s.log_text()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        stop.store(true, Ordering::SeqCst);
    });

    let killed_at = killed_at.unwrap();
    let answers = answers.into_inner().unwrap();
    // Writes in flight at the kill wait for the pool to reach the promoted
    // standby (they are refused with 503 only after the 10 s checkout
    // timeout): the unavailability is from the kill to the first write
    // accepted by the new primary, or from the first refusal if there was one.
    let first_refused = answers
        .iter()
        .find(|a| a.at > killed_at && !a.ok)
        .map(|a| a.at);
    let start = first_refused.unwrap_or(killed_at);
    let first_back = answers.iter().find(|a| a.at > start && a.ok).unwrap();
    let slowest = answers.iter().map(|a| a.at - a.sent).max().unwrap();
    eprintln!(
        "failover: {} writes answered, {} refused; unavailable for {:?} (from the {}; the standby was promoted 0.5 s after the kill); slowest write {:?}",
        answers.len(),
        answers.iter().filter(|a| !a.ok).count(),
        first_back.at - start,
        if first_refused.is_some() { "first refused write" } else { "kill" },
        slowest
    );

    let created = created.into_inner().unwrap();
    let approved = approved.into_inner().unwrap();
    assert!(
        created.len() > 50,
        "the load was too light to mean anything: {}",
        created.len()
    );
    for id in &created {
        let r = all[0].json(&alice, &["show", id]);
        assert_eq!(r["id"], id.as_str(), "a request answered 201 is gone: {r}");
    }
    for id in &approved {
        all[1].wait_for(&alice, id, 30, |r| r["state"] == "active");
    }
    // Each answered request audited exactly once as created; the chain verifies.
    let out = all[2].cli(&s.admin, &["audit", "export"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let mut created_events: BTreeMap<String, usize> = BTreeMap::new();
    let mut seqs = BTreeSet::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let e: Value = serde_json::from_str(line).unwrap();
        assert!(
            seqs.insert(e["seq"].as_u64().unwrap()),
            "duplicate seq: {e}"
        );
        if e["kind"] == "request.created" {
            *created_events
                .entry(e["subject"].as_str().unwrap().to_string())
                .or_default() += 1;
        }
    }
    for id in &created {
        assert_eq!(
            created_events.get(&format!("request:{id}")),
            Some(&1),
            "request {id}"
        );
    }
    let v = all[0].json(&s.admin, &["audit", "verify"]);
    assert_eq!(v["ok"], true, "{v}");
}
