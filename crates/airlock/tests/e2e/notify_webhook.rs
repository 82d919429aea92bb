//! Signed webhooks against a real HTTP receiver: every selected audit event
//! arrives once or more, in order, signed, through receiver outages and
//! airlock restarts; bad webhook configuration stops start-up.

use std::collections::BTreeSet;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::both_stores;
use crate::kit::*;
use crate::receiver::{Hit, Receiver};

const SECRET: &str = "webhook-test-secret";

fn server_with_webhook(db: Db, url: &str, events: Option<&str>) -> Server {
    let mut setup = Setup::new(db);
    setup.extra = format!(
        "\n[[notify.webhook]]\nurl = \"{url}\"\nsecret_file = \"webhook.secret\"\n{}",
        events
            .map(|e| format!("events = {e}\n"))
            .unwrap_or_default()
    );
    Server::start_with_files(setup, &[("webhook.secret", &format!("{SECRET}\n"))])
}

/// Every audit event, from `audit export`.
fn audit(s: &Server) -> Vec<Value> {
    let out = s.cli(&s.admin, &["audit", "export"]);
    assert!(out.status.success(), "{}", stderr(&out));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// A few audit events of several kinds: tokens, a request and its review.
fn some_events(s: &Server, tag: &str) {
    for i in 0..3 {
        s.token(&format!("{tag}{i}"));
    }
    let alice = s.token("alice");
    let r = s.json(
        &alice,
        &[
            "request",
            "payments-db-write",
            "--for",
            "10m",
            "--reason",
            "INC-1",
        ],
    );
    s.json(&s.token("bob"), &["review", &id_of(&r), "--deny"]);
}

/// Checks order and content: the first sighting of each seq is strictly
/// increasing, repeats are only re-deliveries of seqs already seen, every
/// hit is signed and carries the audit event exactly. Returns first sightings.
fn check_stream(hits: &[Hit], audit: &[Value]) -> Vec<u64> {
    let mut seen = BTreeSet::new();
    let mut firsts = vec![];
    for h in hits {
        let seq = h.seq();
        assert!(
            h.signature_valid(SECRET),
            "bad signature on seq {seq}: {}",
            h.signature
        );
        assert_eq!(h.delivery, seq.to_string(), "X-Airlock-Delivery is the seq");
        assert_eq!(h.content_type, "application/json");
        let body = String::from_utf8_lossy(&h.body);
        assert!(body.starts_with("{\"seq\":"), "{body}");
        assert_eq!(h.json().as_object().unwrap().len(), 7, "{body}");
        let want = audit
            .iter()
            .find(|e| e["seq"] == seq)
            .unwrap_or_else(|| panic!("seq {seq} is not in the audit log"));
        for k in ["seq", "kind", "at", "actor", "subject", "data", "hash"] {
            assert_eq!(h.json()[k], want[k], "field {k} of seq {seq}");
        }
        if let Some(&last) = firsts.last() {
            if seq <= last {
                assert!(
                    seen.contains(&seq),
                    "seq {seq} arrived after {last} without being a re-delivery"
                );
                continue;
            }
        }
        seen.insert(seq);
        firsts.push(seq);
    }
    firsts
}

fn metric_text(s: &Server) -> String {
    let (_, _, v) = s.http("GET", "/metrics", None, None);
    v.as_str().unwrap_or_default().to_string()
}

fn metric(s: &Server, line_prefix: &str) -> Option<String> {
    let (_, _, v) = s.http("GET", "/metrics", None, None);
    v.as_str()?
        .lines()
        .find(|l| l.starts_with(line_prefix))
        .map(|l| l.rsplit(' ').next().unwrap().to_string())
}

both_stores!(
    receiver_down_for_a_minute_and_a_restart_lose_nothing_and_keep_order,
    |db| {
        let mut rx = Receiver::start();
        let url = rx.url("/airlock");
        let mut s = server_with_webhook(db, &url, None);
        s.token("first");
        rx.wait_for(20, "the first event", |h| !h.is_empty());
        let first = rx.hits()[0].seq();
        some_events(&s, "up");
        let head = audit(&s).last().unwrap()["seq"].as_u64().unwrap();
        rx.wait_for(20, "events while up", |h| h.iter().any(|h| h.seq() == head));

        rx.down();
        let down_at = Instant::now();
        some_events(&s, "down");
        std::thread::sleep(Duration::from_secs(3)); // a few failed attempts
        s.kill9();
        s.boot();
        some_events(&s, "restarted");
        std::thread::sleep(Duration::from_secs(60).saturating_sub(down_at.elapsed()));
        rx.up();

        let all = audit(&s);
        let head = all.last().unwrap()["seq"].as_u64().unwrap();
        rx.wait_for(90, "every event after the outage", |h| {
            h.iter().any(|h| h.seq() == head)
        });
        let firsts = check_stream(&rx.hits(), &all);
        let want: Vec<u64> = all
            .iter()
            .map(|e| e["seq"].as_u64().unwrap())
            .filter(|&q| q >= first)
            .collect();
        assert_eq!(firsts, want, "every event, in order, none missing");
        // Labelled by name (here the default, by position), never by URL.
        let sink = "airlock_notify_lag_events{sink=\"webhook-1\"}".to_string();
        assert!(
            !metric_text(&s).contains(&url),
            "the webhook URL never shows in /metrics"
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        while metric(&s, &sink).as_deref() != Some("0") {
            assert!(
                Instant::now() < deadline,
                "lag stays {:?}",
                metric(&s, &sink)
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        let delivered = "airlock_notify_delivered_total{sink=\"webhook-1\"}".to_string();
        assert!(metric(&s, &delivered).is_some_and(|n| n.parse::<u64>().unwrap() > 0));
    }
);

both_stores!(event_filter_sends_only_the_selected_kinds, |db| {
    let rx = Receiver::start();
    let s = server_with_webhook(db, &rx.url("/requests"), Some(r#"["request.*"]"#));
    std::thread::sleep(Duration::from_millis(500)); // the sink starts at the head
    some_events(&s, "f");
    let all = audit(&s);
    let last_request = all
        .iter()
        .rev()
        .find(|e| e["kind"].as_str().unwrap().starts_with("request."))
        .unwrap()["seq"]
        .as_u64()
        .unwrap();
    rx.wait_for(20, "the last request event", |h| {
        h.iter().any(|h| h.seq() == last_request)
    });
    let firsts = check_stream(&rx.hits(), &all);
    let want: Vec<u64> = all
        .iter()
        .filter(|e| e["kind"].as_str().unwrap().starts_with("request."))
        .map(|e| e["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(firsts, want, "all request.* events and nothing else");
    assert!(
        all.iter().any(|e| e["kind"] == "token.created"),
        "tokens were audited too"
    );
    assert!(
        rx.checkpoints().is_empty(),
        "request.* does not select audit.checkpoint"
    );
});

both_stores!(
    signed_tree_heads_reach_webhooks_as_audit_checkpoint_and_verify,
    |db| {
        let rx = Receiver::start();
        let s = server_with_webhook(db, &rx.url("/witness"), None);
        some_events(&s, "w");
        let head = audit(&s).last().unwrap()["seq"].as_u64().unwrap();
        let deadline = Instant::now() + Duration::from_secs(15);
        let hit = loop {
            let found = rx
                .checkpoints()
                .into_iter()
                .find(|h| h.json()["size"].as_u64() >= Some(head));
            if let Some(h) = found {
                break h;
            }
            assert!(
                Instant::now() < deadline,
                "no checkpoint covering {head}: {:?}",
                rx.checkpoints()
                    .iter()
                    .map(|h| h.delivery.clone())
                    .collect::<Vec<_>>()
            );
            std::thread::sleep(Duration::from_millis(100));
        };
        assert!(hit.signature_valid(SECRET), "signed like every delivery");
        let v = hit.json();
        assert_eq!(v["kind"], "audit.checkpoint");
        assert_eq!(hit.delivery, format!("checkpoint-{}", v["size"]));
        // What the witness received is a checkpoint the log can be held to.
        let note = v["checkpoint"].as_str().unwrap();
        std::fs::write(s.path("witnessed.txt"), note).unwrap();
        let out = s.cli(
            &s.admin,
            &[
                "audit",
                "verify",
                "--since",
                s.path("witnessed.txt").to_str().unwrap(),
            ],
        );
        assert!(
            out.status.success(),
            "{}\n{}",
            stderr(&out),
            String::from_utf8_lossy(&out.stdout)
        );
    }
);

fn refused(webhook: &str, files: &[(&str, &str)]) -> String {
    let dir = std::env::temp_dir().join(unique("airlock-badhook-"));
    std::fs::create_dir_all(&dir).unwrap();
    for (n, t) in files {
        std::fs::write(dir.join(n), t).unwrap();
    }
    let cfg = dir.join("airlock.toml");
    std::fs::write(
        &cfg,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\ndatabase = \"sqlite://airlock.db\"\n\n{webhook}"
        ),
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["serve", "--config", cfg.to_str().unwrap()])
        .env(
            "AIRLOCK_BOOTSTRAP_TOKEN",
            "alk_bootstrap_badhook_test_token",
        )
        .output()
        .unwrap();
    assert!(!out.status.success(), "started with {webhook}");
    let _ = std::fs::remove_dir_all(&dir);
    stderr(&out)
}

#[test]
fn bad_webhook_configuration_is_refused_at_start_up() {
    let err = refused(
        "[[notify.webhook]]\nurl = \"https://siem.example/airlock\"\nsecret_file = \"missing.secret\"\n",
        &[],
    );
    assert!(
        err.contains("missing.secret") && err.contains("cannot read secret file"),
        "{err}"
    );
    let err = refused(
        "[[notify.webhook]]\nurl = \"https://siem.example/airlock\"\nsecret_file = \"empty\"\n",
        &[("empty", "\n")],
    );
    assert!(err.contains("is empty"), "{err}");
    let err = refused(
        "[[notify.webhook]]\nurl = \"https://siem.example/airlock\"\n",
        &[],
    );
    assert!(
        err.contains("`secret` (or `secret_file`) is required"),
        "{err}"
    );
    let err = refused(
        "[[notify.webhook]]\nurl = \"ftp://siem.example/airlock\"\nsecret = \"s\"\n",
        &[],
    );
    assert!(err.contains("must be an http(s) URL"), "{err}");
    let err = refused(
        "[[notify.webhook]]\nurl = \"http://\"\nsecret = \"s\"\n",
        &[],
    );
    assert!(err.contains("http://") && err.contains("url"), "{err}");
    let err = refused(
        "[[notify.webhook]]\nurl = \"https://siem.example/a\"\nsecret = \"s\"\nevents = [\"Request created\"]\n",
        &[],
    );
    assert!(err.contains("event pattern"), "{err}");
}
