//! The MariaDB provider through the real binary and CLI against a real
//! MariaDB (`AIRLOCK_TEST_MYSQL_URL`, started by ./scripts/test): login works
//! while active, and the server-side EVENT drops the user at `not_after`
//! while the airlock server is down.

use std::process::Command;
use std::time::Duration;

use crate::kit::*;

pub(crate) fn mysql_url() -> String {
    std::env::var("AIRLOCK_TEST_MYSQL_URL").unwrap_or_else(|_| {
        panic!(
            "AIRLOCK_TEST_MYSQL_URL is not set: run ./scripts/test (it starts a throwaway MariaDB)"
        )
    })
}

/// `(host, port)` of the test MariaDB.
pub(crate) fn host_port() -> (String, String) {
    let rest = mysql_url();
    let rest = rest.trim_start_matches("mysql://");
    let hostport = rest
        .split('@')
        .next_back()
        .unwrap()
        .split('/')
        .next()
        .unwrap();
    let (h, p) = hostport.split_once(':').unwrap_or((hostport, "3306"));
    (h.to_string(), p.to_string())
}

/// Runs SQL with the `mariadb` client as `user` (root when no password).
pub(crate) fn sql(user: &str, password: Option<&str>, query: &str) -> Result<String, String> {
    let (host, port) = host_port();
    let mut cmd = Command::new("mariadb");
    cmd.args([
        "-h",
        &host,
        "-P",
        &port,
        "-u",
        user,
        "--batch",
        "--skip-column-names",
    ]);
    if let Some(pw) = password {
        cmd.arg(format!("-p{pw}"));
    }
    let out = cmd
        .args(["-e", query])
        .output()
        .map_err(|e| format!("cannot run the mariadb client: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).to_string())
    }
}

#[test]
fn mariadb_grant_logs_in_and_the_event_ends_it_with_airlock_down() {
    let role = unique("e2erole").to_lowercase().replace('-', "");
    sql("root", None, &format!("CREATE ROLE {role}")).unwrap();
    let prefix = unique("e2em").to_lowercase().replace('-', "") + "_";
    let mut setup = Setup::new(Db::Sqlite);
    setup.extra = format!(
        r#"
[providers.maria]
kind = "mysql"
url = "{url}"
role_prefix = "{prefix}"

[[entitlement]]
name = "orders-write"
provider = "maria"
role = "{role}"
max_duration = "1h"
approvals = {{ count = 1, reviewers = ["payments-eng"] }}
"#,
        url = mysql_url()
    );
    let mut s = Server::start(setup);
    let (alice, bob) = (s.token("alice"), s.token("bob"));
    let r = s.json(
        &alice,
        &[
            "request",
            "orders-write",
            "--for",
            "8s",
            "--reason",
            "CHG-2",
        ],
    );
    let id = id_of(&r);
    s.json(&bob, &["review", &id, "--approve"]);
    let r = s.wait_for(&alice, &id, 10, |r| r["state"] == "active");
    let creds = s.json(&alice, &["credentials", &id]);
    let user = creds["username"].as_str().unwrap().to_string();
    let pw = creds["password"].as_str().unwrap().to_string();
    assert_eq!(user, format!("{prefix}{id}"));
    let roles = sql(&user, Some(&pw), "SELECT CURRENT_ROLE()").expect("login while active");
    assert_eq!(roles, role);

    // Native expiry: airlock is down, the EVENT inside MariaDB drops the user.
    s.kill9();
    let not_after = time::OffsetDateTime::parse(
        r["not_after"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    let wait = not_after - time::OffsetDateTime::now_utc() + time::Duration::seconds(3);
    if wait.is_positive() {
        std::thread::sleep(Duration::from_secs_f64(wait.as_seconds_f64()));
    }
    let err = sql(&user, Some(&pw), "SELECT 1").expect_err("login after not_after");
    assert!(err.contains("Access denied"), "{err}");
    let left = sql(
        "root",
        None,
        &format!("SELECT COUNT(*) FROM mysql.user WHERE User = '{user}'"),
    )
    .unwrap();
    assert_eq!(left, "0");
    let _ = sql("root", None, &format!("DROP ROLE {role}"));
}
