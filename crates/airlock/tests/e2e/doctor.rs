//! `airlock doctor` against a real PostgreSQL: a login role lacking what
//! airlock needs is told exactly what is missing, and the statements it
//! prints make a second run clean.

use std::process::Command;

use serde_json::Value;

use crate::kit::*;

fn doctor(config: &std::path::Path) -> (i32, Value) {
    let out = Command::new(BIN)
        .args(["doctor", "--output", "json", "--config"])
        .arg(config)
        .output()
        .unwrap();
    let v = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{e}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            stderr(&out)
        )
    });
    (out.status.code().unwrap_or(-1), v)
}

#[test]
fn doctor_names_each_missing_privilege_and_its_fixes_make_it_clean() {
    ensure_writer_role();
    let weak = unique("doctor_weak_").to_lowercase();
    let password = "doctor-test-password-1";
    pg().batch_execute(&format!("CREATE ROLE {weak} LOGIN PASSWORD '{password}'"))
        .unwrap();
    let (host, port) = pg_host_port();
    let dir = std::env::temp_dir().join(unique("airlock-doctor-"));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("airlock.toml");
    std::fs::write(
        &config,
        format!(
            r#"[server]
database = "sqlite://airlock.db"

[[group]]
name = "eng"
members = ["alice"]

[providers.pg-weak]
kind = "postgres"
url = "postgres://{weak}:{password}@{host}:{port}/postgres"

[[entitlement]]
name = "db-write"
provider = "pg-weak"
role = "{WRITER_ROLE}"
max_duration = "1h"
approvals = {{ count = 1, reviewers = ["eng"] }}

[[entitlement]]
name = "db-ghost"
provider = "pg-weak"
role = "airlock_e2e_no_such_role"
max_duration = "1h"
approvals = {{ count = 1, reviewers = ["eng"] }}
"#
        ),
    )
    .unwrap();

    let (code, v) = doctor(&config);
    assert_eq!(code, 1, "{v}");
    assert_eq!(v["ok"], false);
    let findings = v["providers"][0]["findings"].as_array().unwrap().clone();
    let missing: Vec<(&str, &str)> = findings
        .iter()
        .filter(|f| f["ok"] == false)
        .map(|f| (f["check"].as_str().unwrap(), f["fix"].as_str().unwrap()))
        .collect();
    let admin = format!("ADMIN on {WRITER_ROLE}");
    assert_eq!(
        missing,
        [
            ("CREATEROLE", format!("ALTER ROLE {weak} CREATEROLE;").as_str()),
            ("pg_signal_backend", format!("GRANT pg_signal_backend TO {weak};").as_str()),
            (
                "role airlock_e2e_no_such_role",
                "CREATE ROLE airlock_e2e_no_such_role NOLOGIN;  -- then GRANT it the privileges the entitlement stands for"
            ),
            (admin.as_str(), format!("GRANT {WRITER_ROLE} TO {weak} WITH ADMIN OPTION;").as_str()),
        ],
        "{v}"
    );
    // The text report says the same, with the fixes.
    let text = Command::new(BIN)
        .args(["doctor", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains("MISSING") && text.contains("fix: ALTER ROLE"),
        "{text}"
    );

    // Run what it printed (as an administrator), minus the role we keep absent.
    let ghost = "role airlock_e2e_no_such_role";
    let fixes: Vec<&str> = missing
        .iter()
        .filter(|(c, _)| *c != ghost)
        .map(|(_, f)| *f)
        .collect();
    pg().batch_execute(&fixes.join("\n")).unwrap();
    let (_, v) = doctor(&config);
    let still: Vec<&str> = v["providers"][0]["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["ok"] == false)
        .map(|f| f["check"].as_str().unwrap())
        .collect();
    assert_eq!(still, [ghost], "{v}");

    // An unreachable provider is reported, not a crash.
    let down = std::fs::read_to_string(&config)
        .unwrap()
        .replace(&format!("{host}:{port}"), "127.0.0.1:9");
    std::fs::write(&config, down).unwrap();
    let (code, v) = doctor(&config);
    assert_eq!(code, 1);
    assert_eq!(v["providers"][0]["reachable"], false, "{v}");
    assert!(
        v["providers"][0]["error"]
            .as_str()
            .unwrap()
            .contains("unreachable"),
        "{v}"
    );

    let _ = pg().batch_execute(&format!(
        "REVOKE {WRITER_ROLE} FROM {weak}; REVOKE pg_signal_backend FROM {weak}; DROP ROLE {weak}"
    ));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn mariadb_doctor_names_each_missing_privilege_and_its_fixes_make_it_clean() {
    use crate::mysql::{host_port, sql};
    let role = unique("docrole").to_lowercase().replace('-', "");
    let weak = unique("docweak").to_lowercase().replace('-', "");
    let password = "doctor-test-password-2";
    sql("root", None, &format!("CREATE ROLE {role}")).unwrap();
    sql(
        "root",
        None,
        &format!("CREATE USER '{weak}'@'%' IDENTIFIED BY '{password}'; GRANT CREATE USER ON *.* TO '{weak}'@'%'"),
    )
    .unwrap();
    let (host, port) = host_port();
    let dir = std::env::temp_dir().join(unique("airlock-doctor-"));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("airlock.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[[user]]
name = "bob"

[providers.maria]
kind = "mysql"
url = "mysql://{weak}:{password}@{host}:{port}/"

[[entitlement]]
name = "orders-write"
provider = "maria"
role = "{role}"
max_duration = "1h"
approvals = {{ count = 1, reviewers = ["user:bob"] }}
"#
        ),
    )
    .unwrap();
    let failing = |v: &Value| -> Vec<(String, String)> {
        v["providers"][0]["findings"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|f| f["ok"] == false)
            .map(|f| {
                (
                    f["check"].as_str().unwrap().to_string(),
                    f["fix"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    };
    let (code, first) = doctor(&config);
    assert_eq!(code, 1, "{first}");
    let checks: Vec<String> = failing(&first).into_iter().map(|(c, _)| c).collect();
    for want in [
        "CONNECTION ADMIN",
        "EVENT",
        "SELECT ON mysql.user",
        "SELECT ON mysql.roles_mapping",
        "UPDATE ON mysql.*",
        &format!("role {role}"),
    ] {
        assert!(
            checks.iter().any(|c| c == want),
            "{want} not reported: {first}"
        );
    }
    assert!(
        !checks.iter().any(|c| c == "CREATE USER"),
        "it holds CREATE USER: {first}"
    );
    // Run what it prints, as an admin would, until it is clean (the role's
    // ADMIN OPTION can only be judged once mysql.user is readable).
    let mut last = first;
    for _ in 0..3 {
        let fixes = failing(&last);
        if fixes.is_empty() {
            break;
        }
        for (_, fix) in fixes {
            let statement = fix.split("--").next().unwrap().trim().to_string();
            sql("root", None, &statement).unwrap_or_else(|e| panic!("{statement}: {e}"));
        }
        last = doctor(&config).1;
    }
    assert!(
        failing(&last).is_empty(),
        "still failing after the fixes: {last}"
    );
    assert_eq!(doctor(&config).0, 0);
    let _ = sql(
        "root",
        None,
        &format!("DROP USER '{weak}'@'%'; DROP ROLE {role}"),
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn config_check_lists_every_problem_or_summarises_who_may_do_what() {
    let dir = std::env::temp_dir().join(unique("airlock-config-check-"));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("airlock.toml");
    let good = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n{}",
        default_catalog("cfgcheck_")
    );
    std::fs::write(&file, &good).unwrap();
    let run = |args: &[&str]| {
        let out = Command::new(BIN)
            .args(["config", "check"])
            .arg(&file)
            .args(args)
            .output()
            .unwrap();
        (out.status.code(), out)
    };
    let (code, out) = run(&["--output", "json"]);
    assert_eq!(code, Some(0), "{}", stderr(&out));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["ok"], true);
    let bg = v["entitlements"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "payments-breakglass")
        .unwrap();
    assert_eq!(bg["breakglass"], true);
    assert_eq!(bg["requesters"], serde_json::json!(["payments-eng"]));
    assert_eq!(bg["kind"], "postgres");
    // Two unrelated mistakes: both reported, each with its line.
    let bad = good.replacen("role_prefix = ", "colour = \"red\"\nrole_prefix = ", 1)
        + "\n[[entitlement]]\nname = \"orphan\"\nprovider = \"nowhere\"\nmax_duration = \"1h\"\napprovals = { count = 1, reviewers = [\"payments-eng\"] }\n";
    std::fs::write(&file, &bad).unwrap();
    let (code, out) = run(&["--output", "json"]);
    assert_eq!(code, Some(1));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let problems: Vec<&str> = v["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap())
        .collect();
    assert_eq!(problems.len(), 2, "{problems:?}");
    assert!(
        problems.iter().any(|p| p.contains("colour")),
        "{problems:?}"
    );
    assert!(
        problems.iter().any(|p| p.contains("nowhere")),
        "{problems:?}"
    );
    let (_, out) = run(&[]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("2 problem(s)"));
    let _ = std::fs::remove_dir_all(&dir);
}
