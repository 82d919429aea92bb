//! Start-up and configuration contracts: the sample configuration verbatim,
//! `serve --dev`, config errors, unreachable providers, Cedar policies,
//! `policy test`, OpenAPI.

use std::process::{Command, Stdio};

use crate::kit::*;

const SAMPLE: &str = r#"[server]
listen = "127.0.0.1:8080"
database = "sqlite:///var/lib/airlock/airlock.db"   # or postgres://user@host:5432/db

[[user]]                          # optional: static users (OIDC users need no entry)
name = "alice"
email = "alice@example.com"       # used by providers (e.g. GCP `user:EMAIL`) and notifications

[[group]]
name = "payments-eng"
members = ["alice", "bob"]

[providers.pg-main]
kind = "postgres"
url = "postgres://postgres@127.0.0.1:5432/postgres"

[[entitlement]]
name = "payments-db-write"
description = "Write access to the payments table"
provider = "pg-main"
role = "payments_writer"          # the existing PostgreSQL role to grant
max_duration = "1h"
approvals = { count = 1, reviewers = ["payments-eng"] }
reason = { required = true, pattern = "^(INC|CHG)-[0-9]+" }
"#;

#[test]
fn sample_configuration_from_the_contract_works_verbatim() {
    let dir = std::env::temp_dir().join(unique("airlock-sample-"));
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = dir.join("airlock.toml");
    std::fs::write(&cfg, SAMPLE).unwrap();
    let admin = "alk_sample_bootstrap_token_123456";
    let mut child = Command::new(BIN)
        .args([
            "serve",
            "--config",
            cfg.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
        ])
        .env("AIRLOCK_BOOTSTRAP_TOKEN", admin)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    let addr = line
        .trim()
        .strip_prefix("airlock listening on ")
        .expect("server started")
        .to_string();
    let run = |token: &str, args: &[&str]| {
        Command::new(BIN)
            .args(args)
            .env("AIRLOCK_ADDR", &addr)
            .env("AIRLOCK_TOKEN", token)
            .output()
            .unwrap()
    };
    let t = run(
        admin,
        &["token", "create", "--user", "alice", "--output", "json"],
    );
    assert!(t.status.success(), "{}", stderr(&t));
    let alice: serde_json::Value = serde_json::from_slice(&t.stdout).unwrap();
    assert_eq!(alice["user"], "alice");
    assert!(alice["expires_at"].as_str().unwrap().ends_with('Z'));
    let who = run(
        alice["token"].as_str().unwrap(),
        &["whoami", "--output", "json"],
    );
    let who: serde_json::Value = serde_json::from_slice(&who.stdout).unwrap();
    assert_eq!(who["groups"], serde_json::json!(["payments-eng"]));
    assert_eq!(who["email"], "alice@example.com");
    let bad = run(
        alice["token"].as_str().unwrap(),
        &[
            "request",
            "payments-db-write",
            "--for",
            "10m",
            "--reason",
            "no ticket",
        ],
    );
    assert_eq!(bad.status.code(), Some(1));
    assert!(
        stderr(&bad).contains("^(INC|CHG)-[0-9]+"),
        "{}",
        stderr(&bad)
    );
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn unreachable_provider_refuses_requests_but_the_server_starts() {
    let mut setup = Setup::new(Db::Sqlite);
    setup.extra = r#"
[providers.pg-down]
kind = "postgres"
url = "postgres://postgres@127.0.0.1:1/postgres"

[[entitlement]]
name = "down-db"
provider = "pg-down"
role = "x"
max_duration = "1h"
approvals = { count = 1, reviewers = ["payments-eng"] }
"#
    .into();
    let s = Server::start(setup);
    let alice = s.token("alice");
    let out = s.cli(&alice, &["request", "down-db", "--for", "5m"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("provider pg-down unreachable"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn dev_mode_writes_an_example_catalog_and_prints_a_token() {
    let dir = std::env::temp_dir().join(unique("airlock-dev-"));
    let mut child = Command::new(BIN)
        .args([
            "serve",
            "--dev",
            "--data-dir",
            dir.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
        ])
        .env_remove("AIRLOCK_BOOTSTRAP_TOKEN")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut text = String::new();
    let mut reader = std::io::BufReader::new(child.stdout.take().unwrap());
    for _ in 0..3 {
        std::io::BufRead::read_line(&mut reader, &mut text).unwrap();
    }
    let addr = text
        .lines()
        .next()
        .unwrap()
        .strip_prefix("airlock listening on ")
        .unwrap()
        .to_string();
    let token = text
        .split_whitespace()
        .find(|w| w.starts_with("alk_"))
        .expect("admin token printed")
        .to_string();
    let who = Command::new(BIN)
        .args(["whoami", "-o", "json"])
        .env("AIRLOCK_ADDR", &addr)
        .env("AIRLOCK_TOKEN", &token)
        .output()
        .unwrap();
    let who: serde_json::Value = serde_json::from_slice(&who.stdout).unwrap();
    assert_eq!(who["admin"], true);
    assert!(dir.join("airlock.toml").exists() && dir.join("airlock.db").exists());
    assert!(dir.join("audit-signing.key").exists());
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn unknown_config_key_is_named_with_its_line() {
    let dir = std::env::temp_dir().join(unique("airlock-badcfg-"));
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = dir.join("bad.toml");
    std::fs::write(
        &cfg,
        SAMPLE.replace(
            "max_duration = \"1h\"",
            "max_duration = \"1h\"\nmax_durration = \"2h\"",
        ),
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["serve", "--config", cfg.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("max_durration") && err.contains("line 23"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

const POLICY: &str = r#"@id("short-unless-mfa")
forbid(principal, action == Action::"request", resource)
when { context.duration > 1800 && !context.mfa };
"#;

#[test]
fn cedar_policies_narrow_requests_and_policy_test_checks_them() {
    let mut setup = Setup::new(Db::Sqlite);
    setup.server_extra = "policy = \"policy.cedar\"".into();
    let s = Server::start_with_files(setup, &[("policy.cedar", POLICY)]);
    let alice = s.token("alice");
    let out = s.cli(
        &alice,
        &[
            "request",
            "payments-db-write",
            "--for",
            "45m",
            "--reason",
            "INC-1",
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("short-unless-mfa"),
        "{}",
        stderr(&out)
    );
    s.json(
        &alice,
        &[
            "request",
            "payments-db-write",
            "--for",
            "20m",
            "--reason",
            "INC-1",
        ],
    );

    let cases = r#"
[[case]]
name = "alice, short"
principal = "alice"
action = "request"
entitlement = "payments-db-write"
context = { duration = "20m" }
expect = "allow"

[[case]]
name = "alice, long without MFA"
principal = "alice"
action = "request"
entitlement = "payments-db-write"
context = { duration = "45m" }
expect = "deny"

[[case]]
name = "bob reviews alice"
principal = "bob"
action = "review"
entitlement = "payments-db-write"
context = { requester = "alice" }
expect = "allow"
"#;
    let file = s.path("cases.toml");
    std::fs::write(&file, cases).unwrap();
    let run = |f: &std::path::Path| {
        Command::new(BIN)
            .args([
                "policy",
                "test",
                f.to_str().unwrap(),
                "--config",
                s.config.to_str().unwrap(),
            ])
            .output()
            .unwrap()
    };
    let ok = run(&file);
    assert!(
        ok.status.success(),
        "{}{}",
        String::from_utf8_lossy(&ok.stdout),
        stderr(&ok)
    );
    assert!(String::from_utf8_lossy(&ok.stdout).contains("3 passed, 0 failed"));
    let wrong = s.path("wrong.toml");
    std::fs::write(
        &wrong,
        cases.replacen("expect = \"deny\"", "expect = \"allow\"", 1),
    )
    .unwrap();
    let bad = run(&wrong);
    assert_eq!(bad.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bad.stdout).contains("FAIL alice, long without MFA"));
}

#[test]
fn every_openapi_path_is_served() {
    let s = Server::start(Setup::new(Db::Sqlite));
    let (status, _, doc) = s.http("GET", "/api/v1/openapi.json", None, None);
    assert_eq!(status, 200);
    let paths = doc["paths"].as_object().unwrap();
    assert!(paths.len() >= 15);
    for (path, ops) in paths {
        for method in ops.as_object().unwrap().keys() {
            let p = path.replace("{id}", "aaaaaaaaaaaaaaaa");
            let (status, _, v) = s.http(&method.to_uppercase(), &p, Some(&s.admin), Some("{}"));
            let fallback = v["detail"]
                .as_str()
                .is_some_and(|d| d.contains("no such endpoint"));
            assert!(
                !fallback && status != 405,
                "{method} {path} is documented but not routed ({status})"
            );
        }
    }
}
