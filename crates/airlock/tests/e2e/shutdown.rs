//! SIGTERM drains a replica (`[server] shutdown_grace`): it stops accepting,
//! finishes what it can, hands back its leases and exits 0, on both stores
//! (the PostgreSQL store used to abort on every SIGTERM).

use std::time::{Duration, Instant};

use crate::both_stores;
use crate::kit::*;
use crate::proxy_kit::*;

both_stores!(
    sigterm_exits_0_without_waiting_for_the_grace_and_the_next_start_carries_on,
    |db| {
        let mut setup = Setup::new(db);
        // Long enough that waiting it out would fail the bound below.
        setup.server_extra = "shutdown_grace = \"2m\"\n".into();
        let mut s = Server::start(setup);
        let (alice, bob) = (s.token("alice"), s.token("bob"));
        let active = s.active_grant(&alice, &bob, "1h", "INC-31");
        let pending = s.pending_request(&alice, "30m", "INC-32");
        let asked = Instant::now();
        let status = s.terminate(90);
        let log = s.log_text();
        assert!(status.success(), "exit {status:?}; log: {log}");
        assert!(
            asked.elapsed() < Duration::from_secs(60),
            "nothing was open, yet the drain waited for the grace"
        );
        assert!(
            log.contains("drained") && log.contains("airlock stopped"),
            "{log}"
        );
        assert!(!log.contains("panicked"), "{log}");

        s.boot();
        assert_eq!(s.json(&alice, &["show", &active])["state"], "active");
        assert_eq!(s.json(&alice, &["show", &pending])["state"], "pending");
        // Nothing was left leased to the stopped replica: an approval is
        // applied at once, not after a lease runs out.
        s.json(&bob, &["review", &pending, "--approve"]);
        s.wait_for(&alice, &pending, 10, |r| r["state"] == "active");
        let v = s.json(&s.admin, &["audit", "verify"]);
        assert_eq!(v["ok"], true, "{v}");
    }
);

#[test]
fn a_run_streaming_at_sigterm_finishes_within_the_grace() {
    let tools = Tools::new();
    let mut setup = Setup::new(Db::Sqlite);
    setup.extra = tools.catalog();
    setup.server_extra = "shutdown_grace = \"30s\"\n".into();
    let mut s = Server::start(setup);
    let alice = s.token("alice");
    let cli = spawn_cli(&s, &alice, &["exec", "--", "argv", "sleep", "2"]);
    let id = loop_until_running(&s, &alice);
    let status = s.terminate(60);
    assert!(status.success(), "exit {status:?}; log: {}", s.log_text());
    let (code, _, err) = finish_cli(cli, 10);
    assert_eq!(code, 0, "the run's stream ended early: {err}");
    s.boot();
    let r = wait_run(&s, &alice, &id, 5, finished);
    assert_eq!(r["state"], "succeeded", "{r}");
}

#[test]
fn a_run_longer_than_the_grace_does_not_hold_the_exit_up() {
    let tools = Tools::new();
    let mut setup = Setup::new(Db::Sqlite);
    setup.extra = tools.catalog();
    setup.server_extra = "shutdown_grace = \"1s\"\n".into();
    let mut s = Server::start(setup);
    let alice = s.token("alice");
    let cli = spawn_cli(&s, &alice, &["exec", "--", "argv", "sleep", "120"]);
    loop_until_running(&s, &alice);
    let status = s.terminate(30);
    let log = s.log_text();
    assert!(status.success(), "exit {status:?}; log: {log}");
    assert!(log.contains("shutdown_grace is over"), "{log}");
    let (code, _, _) = finish_cli(cli, 10);
    assert_ne!(
        code, 0,
        "the CLI must not report a run it never saw end as a success"
    );
}

/// Waits for alice's run to execute; returns its id.
fn loop_until_running(s: &Server, token: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let runs = s.json(token, &["run", "list"]);
        if let Some(r) = runs
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["state"] == "running")
        {
            return r["id"].as_str().unwrap().to_string();
        }
        assert!(Instant::now() < deadline, "the run never started: {runs}");
        std::thread::sleep(Duration::from_millis(50));
    }
}
