//! Providers beyond PostgreSQL through the real binary and CLI: the generic
//! command provider, drift reports (orphaned and standing access), and
//! provider configuration errors at start-up.

use serde_json::Value;

use crate::kit::*;

/// An operator's grant script: keeps `ID PRINCIPAL ROLE NOT_AFTER` lines.
const GRANTS_SCRIPT: &str = r#"#!/bin/sh
state="$(dirname "$0")/grants.state"
touch "$state"
case "$1" in
  grant) grep -q "^$2 " "$state" || echo "$2 $3 $4 $5" >> "$state" ;;
  revoke) grep -v "^$2 " "$state" > "$state.tmp"; mv "$state.tmp" "$state" ;;
  list) while read -r id rest; do printf '{"account": "%s", "request_id": "%s"}\n' "$id" "$id"; done < "$state" ;;
esac
"#;

fn command_setup(dir_hint: &str) -> Setup {
    let mut setup = Setup::new(Db::Sqlite);
    setup.extra = format!(
        r#"
[providers.legacy]
kind = "command"
grant = ["{dir_hint}/grants.sh", "grant", "{{request_id}}", "{{principal}}", "{{role}}", "{{not_after}}"]
revoke = ["{dir_hint}/grants.sh", "revoke", "{{account}}"]
list = ["{dir_hint}/grants.sh", "list"]
timeout = "10s"

[[entitlement]]
name = "legacy-admin"
provider = "legacy"
role = "admin"
max_duration = "1h"
approvals = {{ count = 1, reviewers = ["payments-eng"] }}
"#
    );
    setup
}

fn state(dir: &std::path::Path) -> String {
    std::fs::read_to_string(dir.join("grants.state")).unwrap_or_default()
}

#[test]
fn command_provider_grants_revokes_and_removes_drift_through_the_cli() {
    // The script lives in a folder known before the server writes its config.
    let scripts = std::env::temp_dir().join(unique("airlock-cmd-"));
    std::fs::create_dir_all(&scripts).unwrap();
    let prog = scripts.join("grants.sh");
    std::fs::write(&prog, GRANTS_SCRIPT).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&prog, std::fs::Permissions::from_mode(0o755)).unwrap();

    let s = Server::start(command_setup(scripts.to_str().unwrap()));
    let (alice, bob) = (s.token("alice"), s.token("bob"));
    let r = s.json(
        &alice,
        &[
            "request",
            "legacy-admin",
            "--for",
            "10m",
            "--reason",
            "CHG-7",
        ],
    );
    let id = id_of(&r);
    s.json(&bob, &["review", &id, "--approve"]);
    let r = s.wait_for(&alice, &id, 10, |r| r["state"] == "active");
    let line = state(&scripts);
    let fields: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(fields[..3], [id.as_str(), "alice", "admin"], "{line}");
    // {not_after} is floored to the second, so the target never outlives the grant.
    let exact = r["not_after"].as_str().unwrap();
    assert!(
        fields[3].ends_with('Z') && exact.starts_with(fields[3].trim_end_matches('Z')),
        "{line} vs {exact}"
    );

    let creds = s.json(&alice, &["credentials", &id]);
    assert_eq!(creds["principal"], "alice");
    assert_eq!(creds["role"], "admin");
    // A public key is refused for a provider that does not certify keys.
    let key = scripts.join("k.pub");
    std::fs::write(&key, "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIE7x user\n").unwrap();
    let out = s.cli(
        &alice,
        &["credentials", &id, "--public-key", key.to_str().unwrap()],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("does not use a public key"),
        "{}",
        stderr(&out)
    );

    s.json(&alice, &["revoke", &id]);
    s.wait_for(&alice, &id, 10, |r| r["grant"]["phase"] == "removed");
    assert_eq!(state(&scripts).trim(), "");

    // Access the script reports without a grant is drift: removed and audited.
    std::fs::write(
        scripts.join("grants.state"),
        "zzzzzzzzzzzzzzzz mallory admin 2099-01-01T00:00:00Z\n",
    )
    .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    while !state(&scripts).trim().is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "drift not removed: {}",
            s.log_text()
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let kinds = s.audit_kinds("provider:legacy");
    assert!(
        kinds.contains(&"drift.detected".to_string())
            && kinds.contains(&"drift.removed".to_string()),
        "{kinds:?}"
    );
    let _ = std::fs::remove_dir_all(&scripts);
}

#[test]
fn drift_reports_standing_access_outside_airlock_to_admins_only() {
    let s = Server::start(Setup::new(Db::Sqlite));
    // A login role granted the entitlement's role by hand: standing privilege.
    let standing = unique("standing").to_lowercase().replace('-', "");
    pg().batch_execute(&format!(
        "CREATE ROLE {standing} LOGIN; GRANT {WRITER_ROLE} TO {standing}"
    ))
    .unwrap();
    let alice = s.token("alice");
    let id = s.active_grant(&alice, &s.token("bob"), "10m", "INC-9 drift");

    let report = s.json(&s.admin, &["drift", "--provider", "pg-main"]);
    let providers = report["providers"].as_array().unwrap();
    assert_eq!(providers.len(), 1);
    let p = &providers[0];
    assert_eq!(p["provider"], "pg-main");
    assert_eq!(p["kind"], "postgres");
    assert_eq!(p["error"], Value::Null);
    let holders: Vec<&str> = p["standing"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["entitlement"] == "payments-db-write")
        .map(|s| s["principal"].as_str().unwrap())
        .collect();
    assert!(holders.contains(&standing.as_str()), "{p}");
    // airlock's own grant is neither standing nor orphaned.
    let own = format!("{}{id}", s.role_prefix);
    assert!(!holders.contains(&own.as_str()), "{p}");
    assert!(p["orphaned"].as_array().unwrap().is_empty(), "{p}");

    let text = s.cli(&s.admin, &["--output", "text", "drift"]);
    let text = String::from_utf8_lossy(&text.stdout).to_string();
    assert!(
        text.contains(&format!("standing   {standing} holds payments-db-write")),
        "{text}"
    );
    let out = s.cli(&alice, &["drift"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("only admins"), "{}", stderr(&out));
    let out = s.cli(&s.admin, &["drift", "--provider", "nope"]);
    assert!(
        stderr(&out).contains("provider `nope`") && stderr(&out).contains("pg-main"),
        "{}",
        stderr(&out)
    );
    let (_, _, metrics) = s.http("GET", "/metrics", None, None);
    let metrics = metrics.as_str().unwrap().to_string();
    assert!(
        metrics.lines().any(|l| l
            .starts_with("airlock_drift_accounts{provider=\"pg-main\",type=\"standing\"}")
            && !l.ends_with(" 0")),
        "{metrics}"
    );
    pg().batch_execute(&format!("DROP ROLE {standing}"))
        .unwrap();
}

#[test]
fn ssh_routes_name_the_provider_kind_when_it_is_not_ssh() {
    let s = Server::start(Setup::new(Db::Sqlite));
    let (status, _, v) = s.http("GET", "/api/v1/providers/pg-main/ssh/ca.pub", None, None);
    assert_eq!(status, 404);
    assert!(
        v["detail"]
            .as_str()
            .unwrap()
            .contains("kind postgres, not ssh"),
        "{v}"
    );
    let out = s.cli(&s.admin, &["ssh", "krl", "nope"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("provider `nope`"), "{}", stderr(&out));
}

#[test]
fn provider_configuration_mistakes_are_refused_at_start_up() {
    let base = "[server]\nlisten = \"127.0.0.1:0\"\n";
    let err = serve_error(&format!("{base}[providers.x]\nkind = \"oracle\"\n"));
    assert!(
        err.contains("unknown kind `oracle`") && err.contains("gcp-iam"),
        "{err}"
    );
    let err = serve_error(&format!(
        "{base}[providers.x]\nkind = \"postgres\"\nurl = \"postgres://a@b/c\"\nca_key = \"k\"\n"
    ));
    assert!(
        err.contains("`ca_key` does not apply to kind postgres"),
        "{err}"
    );
    assert!(err.contains("[providers.x], line 6"), "{err}");
    let err = serve_error(&format!(
        "{base}[providers.x]\nkind = \"command\"\ngrant = [\"grant.sh\"]\nrevoke = [\"/bin/true\"]\n"
    ));
    assert!(err.contains("absolute program path"), "{err}");
    let err = serve_error(&format!(
        "{base}[providers.pg]\nkind = \"postgres\"\nurl = \"postgres://a@b/c\"\n\
         [[entitlement]]\nname = \"e\"\nprovider = \"pg\"\nrole = \"bad role; drop\"\n\
         max_duration = \"1h\"\napprovals = {{ count = 1, reviewers = [\"x\"] }}\n"
    ));
    assert!(err.contains("role `bad role; drop` is not valid"), "{err}");
    let err = serve_error(&format!(
        "{base}[providers.pg]\nkind = \"postgres\"\nurl = \"postgres://a@b/c\"\n\
         [[entitlement]]\nname = \"e\"\nprovider = \"pg\"\nrole = \"r\"\nprincipals = [\"deploy\"]\n\
         max_duration = \"1h\"\napprovals = {{ count = 1, reviewers = [\"x\"] }}\n"
    ));
    assert!(
        err.contains("`principals` does not apply to provider `pg`"),
        "{err}"
    );
}

#[test]
fn policy_test_refuses_a_bad_provider_key_when_loading_the_config() {
    let dir = std::env::temp_dir().join(unique("airlock-provcfg-"));
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = dir.join("airlock.toml");
    std::fs::write(
        &cfg,
        "[providers.legacy]\nkind = \"command\"\ngrant = [\"/bin/true\", \"{princpal}\"]\n\
         revoke = [\"/bin/true\"]\n",
    )
    .unwrap();
    let cases = dir.join("cases.toml");
    std::fs::write(&cases, "").unwrap();
    let out = std::process::Command::new(BIN)
        .args([
            "policy",
            "test",
            cases.to_str().unwrap(),
            "--config",
            cfg.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("[providers.legacy], line 3")
            && err.contains("unknown placeholder {princpal}"),
        "{err}"
    );
}
