//! The monitoring kit in deploy/: promtool checks and unit-tests the alert
//! rules, lints a live server's /metrics, and every metric the rules and the
//! Grafana dashboard use is one the server exposes.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::kit::*;

fn promtool() -> String {
    std::env::var("AIRLOCK_TEST_PROMTOOL").unwrap_or_else(|_| {
        panic!("AIRLOCK_TEST_PROMTOOL is not set: run ./scripts/test (scripts/setup/promtool.sh installs promtool)")
    })
}

fn deploy() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../deploy")
}

fn promtool_ok(args: &[&str]) {
    let out = Command::new(promtool())
        .args(args)
        .current_dir(deploy().join("prometheus"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "promtool {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        stderr(&out)
    );
}

#[test]
fn promtool_checks_and_unit_tests_the_alert_rules_and_the_scrape_config() {
    promtool_ok(&["check", "rules", "airlock-alerts.yml"]);
    promtool_ok(&["test", "rules", "airlock-alerts.test.yml"]);
    promtool_ok(&["check", "config", "--syntax-only", "scrape.yml"]);
}

/// `airlock_…` names a text uses, histogram series folded to their base.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("airlock_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'))
            .unwrap_or(tail.len());
        let name = &tail[..end];
        let base = ["_bucket", "_count", "_sum"]
            .iter()
            .find_map(|s| name.strip_suffix(s))
            .unwrap_or(name);
        names.insert(base.to_string());
        rest = &tail[end..];
    }
    names
}

fn metrics(s: &Server) -> String {
    let (status, _, body) = s.http("GET", "/metrics", None, None);
    assert_eq!(status, 200, "{body}");
    body.as_str().expect("metrics are text").to_string()
}

#[test]
fn a_live_server_exposes_every_metric_the_kit_uses_and_promtool_lints_it_clean() {
    let mut setup = Setup::new(Db::Sqlite);
    // A sink that never answers: its lag and failure series appear.
    setup.extra = "\n[[notify.webhook]]\nurl = \"http://127.0.0.1:9/hook\"\nsecret_file = \"webhook.secret\"\n".into();
    let s = Server::start_with_files(setup, &[("webhook.secret", "monitoring-test-secret\n")]);
    let alice = s.token("alice");
    s.pending_request(&alice, "10m", "INC-7");
    // The audit watch verifies the log shortly after start-up.
    let deadline = Instant::now() + Duration::from_secs(20);
    let scrape = loop {
        let text = metrics(&s);
        if text.contains("airlock_audit_chain_ok 1") {
            break text;
        }
        assert!(
            Instant::now() < deadline,
            "no audit verification in the metrics: {text}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let mut lint = Command::new(promtool())
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    lint.stdin
        .take()
        .unwrap()
        .write_all(scrape.as_bytes())
        .unwrap();
    let out = lint.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&out.stdout),
        stderr(&out)
    );

    let exposed: BTreeSet<String> = scrape
        .lines()
        .filter_map(|l| l.strip_prefix("# HELP "))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect();
    for file in ["prometheus/airlock-alerts.yml", "grafana/airlock.json"] {
        let text = std::fs::read_to_string(deploy().join(file)).unwrap();
        let used = metric_names(&text);
        assert!(used.len() >= 8, "{file} uses hardly any metrics: {used:?}");
        let missing: Vec<_> = used.difference(&exposed).collect();
        assert!(
            missing.is_empty(),
            "{file} uses metrics the server does not expose: {missing:?}"
        );
    }

    // A rewritten log shows up as 0 at the next verification.
    s.store_sql("DELETE FROM audit_events WHERE seq = 2");
    let v = s.cli(&s.admin, &["audit", "verify"]);
    assert!(!v.status.success());
    let text = metrics(&s);
    assert!(text.contains("airlock_audit_chain_ok 0"), "{text}");
}
