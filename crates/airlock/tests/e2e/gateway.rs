//! The gateway through the real binary: `airlock connect` with real `psql`,
//! `pgbench` and the `postgres` client against real PostgreSQL; the
//! credential stays on the server, every statement is logged, and sessions
//! are cut at `not_after`, on revoke, on lock and on terminate, also when
//! another replica decided it.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::kit::*;

/// The default catalog plus gateway entitlements (and a TCP echo target).
fn gateway_setup(db: Db, echo: Option<u16>) -> Setup {
    let mut s = Setup::new(db);
    s.extra = format!(
        r#"
[[entitlement]]
name = "payments-db-gateway"
provider = "pg-main"
role = "{WRITER_ROLE}"
max_duration = "1h"
access = "gateway"
approvals = {{ count = 1, reviewers = ["payments-eng"] }}

[[entitlement]]
name = "payments-db-both"
provider = "pg-main"
role = "{WRITER_ROLE}"
max_duration = "1h"
access = "both"
approvals = {{ count = 1, reviewers = ["payments-eng"] }}
"#
    );
    if let Some(port) = echo {
        s.extra.push_str(&format!(
            r#"
[[entitlement]]
name = "echo-tcp"
provider = "pg-main"
role = "{WRITER_ROLE}"
max_duration = "1h"
access = "gateway"
target = "127.0.0.1:{port}"
approvals = {{ count = 1, reviewers = ["payments-eng"] }}
"#
        ));
    }
    s
}

/// Requests `entitlement`, has bob approve, waits until active.
pub(crate) fn grant(
    srv: &Server,
    alice: &str,
    bob: &str,
    entitlement: &str,
    duration: &str,
) -> String {
    let id = id_of(&srv.json(
        alice,
        &[
            "request",
            entitlement,
            "--for",
            duration,
            "--reason",
            "INC-9",
        ],
    ));
    srv.json(bob, &["review", &id, "--approve"]);
    srv.wait_for(alice, &id, 10, |r| r["state"] == "active");
    id
}

/// `airlock connect ID --listen 127.0.0.1:0` running in the background.
struct Connect {
    child: Child,
    addr: String,
    stdout: BufReader<std::process::ChildStdout>,
}

impl Connect {
    fn start(srv: &Server, token: &str, id: &str) -> Connect {
        let mut child = Command::new(BIN)
            .args(["connect", id, "--output", "json"])
            .env("AIRLOCK_ADDR", &srv.addr)
            .env("AIRLOCK_TOKEN", token)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start airlock connect");
        let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
        let mut line = String::new();
        stdout.read_line(&mut line).expect("read listen line");
        let v: Value = serde_json::from_str(&line).unwrap_or_else(|e| {
            let mut err = String::new();
            let _ = child.stderr.take().map(|mut s| s.read_to_string(&mut err));
            panic!("not a listen line ({e}): {line:?}, stderr: {err}")
        });
        assert_eq!(v["request"], id);
        Connect {
            child,
            addr: v["listen"].as_str().expect("listen").to_string(),
            stdout,
        }
    }

    fn port(&self) -> u16 {
        self.addr.rsplit(':').next().unwrap().parse().unwrap()
    }

    /// A PostgreSQL client through the tunnel; the user name is ignored.
    fn pg(&self) -> postgres::Client {
        let mut c = postgres::Config::new();
        c.host("127.0.0.1")
            .port(self.port())
            .user("whoever")
            .dbname("postgres")
            .connect_timeout(Duration::from_secs(10));
        c.connect(postgres::NoTls)
            .expect("connect through the gateway")
    }

    /// Waits for `airlock connect` to exit by itself; its next stdout line.
    fn wait_exit(mut self, secs: u64) -> (std::process::ExitStatus, String) {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                let mut rest = String::new();
                let _ = self.stdout.read_to_string(&mut rest);
                return (status, rest);
            }
            assert!(Instant::now() < deadline, "airlock connect did not exit");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Connect {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) fn sessions(srv: &Server, token: &str, id: &str) -> Vec<Value> {
    srv.json(token, &["session", "list", "--request", id])
        .as_array()
        .expect("list")
        .clone()
}

/// Waits until request `id`'s only session has ended; returns it.
pub(crate) fn ended_session(srv: &Server, token: &str, id: &str, secs: u64) -> Value {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let s = sessions(srv, token, id);
        if let Some(done) = s.iter().find(|s| !s["ended_at"].is_null()) {
            return done.clone();
        }
        assert!(
            Instant::now() < deadline,
            "no session of {id} ended: {s:?}\n{}",
            srv.log_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn events(srv: &Server, token: &str, session: &str) -> (Vec<Value>, Vec<u8>) {
    let out = srv.cli(token, &["session", "events", session, "--output", "json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let lines = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect();
    (lines, out.stdout)
}

pub(crate) fn rfc3339(v: &Value) -> time::OffsetDateTime {
    time::OffsetDateTime::parse(
        v.as_str().expect("time"),
        &time::format_description::well_known::Rfc3339,
    )
    .expect("RFC 3339")
}

#[test]
fn psql_and_pgbench_run_through_the_gateway_and_every_statement_is_logged() {
    let mut srv = Server::start(gateway_setup(Db::Sqlite, None));
    let (alice, bob, carol) = (srv.token("alice"), srv.token("bob"), srv.token("carol"));
    let id = grant(&srv, &alice, &bob, "payments-db-gateway", "1h");

    // The credential never leaves: refused, pointing at connect.
    let out = srv.cli(&alice, &["credentials", &id]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("airlock connect"), "{}", stderr(&out));
    assert!(stderr(&out).contains("403"), "{}", stderr(&out));
    // Only the requester may connect; others do not even learn it exists.
    let out = srv.cli(&bob, &["connect", &id]);
    assert!(
        stderr(&out).contains("only the requester"),
        "{}",
        stderr(&out)
    );
    let out = srv.cli(&carol, &["connect", &id]);
    assert!(stderr(&out).contains("404"), "{}", stderr(&out));
    // A grant used for credentials is not a gateway grant.
    let plain = srv.active_grant(&alice, &bob, "10m", "INC-1");
    let out = srv.cli(&alice, &["connect", &plain]);
    assert!(
        stderr(&out).contains("airlock credentials"),
        "{}",
        stderr(&out)
    );

    // Real psql, the simple protocol.
    let out = Command::new(BIN)
        .args([
            "connect",
            &id,
            "--",
            "psql",
            "-X",
            "-At",
            "-v",
            "ON_ERROR_STOP=1",
        ])
        .args(["-c", "select current_user, generate_series(1, 3)"])
        .args(["-c", "select 40 + 2 as answer"])
        .args(["-c", "select '<b>bold</b>' as markup"])
        .args(["-c", "select nope_column"])
        .args(["-c", "select 'after the error'"])
        .env("AIRLOCK_ADDR", &srv.addr)
        .env("AIRLOCK_TOKEN", &alice)
        .output()
        .expect("run psql through connect");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("42"), "{stdout} {}", stderr(&out));
    let role = format!("{}{id}", srv.role_prefix);
    assert!(
        stdout.contains(&format!("{role}|3")),
        "psql runs as the grant's role: {stdout}"
    );
    // psql stops at the failing statement, and connect exits with its status.
    assert!(!out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("nope_column"), "{}", stderr(&out));

    let s = ended_session(&srv, &alice, &id, 10);
    assert_eq!(s["kind"], "postgres");
    assert_eq!(s["user"], "alice");
    assert_eq!(s["end_reason"], "client_closed");
    assert!(s["bytes_up"].as_u64().unwrap() > 0 && s["bytes_down"].as_u64().unwrap() > 0);
    let session = s["id"].as_str().unwrap().to_string();
    let (log, raw) = events(&srv, &alice, &session);
    let answer = log
        .iter()
        .find(|e| e["statement"] == "select 40 + 2 as answer")
        .unwrap_or_else(|| panic!("{log:?}"));
    assert_eq!(answer["kind"], "query");
    assert_eq!(answer["tag"], "SELECT 1");
    assert_eq!(answer["rows"], 1);
    assert!(answer["error"].is_null());
    assert!(answer["duration_ms"].as_f64().unwrap() >= 0.0);
    let nope = log
        .iter()
        .find(|e| e["statement"] == "select nope_column")
        .unwrap();
    assert!(
        nope["error"].as_str().unwrap().starts_with("42703"),
        "{nope}"
    );
    let series = log
        .iter()
        .find(|e| e["statement"] == "select current_user, generate_series(1, 3)")
        .unwrap();
    assert_eq!(series["rows"], 3, "{series}");
    assert!(
        !log.iter()
            .any(|e| e["statement"] == "select 'after the error'"),
        "psql stopped at the error: {log:?}"
    );

    // The reviewer sees it in the web UI, statements escaped; carol does not.
    let mut web = crate::web_http::WebClient::new(&srv);
    web.sign_in(&bob);
    let page = web.get(&format!("/ui/sessions/{session}"));
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(
        page.body.contains("select 40 + 2 as answer"),
        "{}",
        page.body
    );
    assert!(page.body.contains("42703"), "{}", page.body);
    assert!(page.body.contains("&lt;b&gt;bold&lt;/b&gt;") && !page.body.contains("<b>bold"));
    assert!(web.get("/ui/sessions").body.contains(&session));
    let mut other = crate::web_http::WebClient::new(&srv);
    other.sign_in(&carol);
    assert_eq!(other.get(&format!("/ui/sessions/{session}")).status, 404);
    assert!(!other.get("/ui/sessions").body.contains(&session));

    // The reviewer and an admin read it; carol does not.
    assert_eq!(sessions(&srv, &bob, &id).len(), 1);
    assert_eq!(sessions(&srv, &srv.admin, &id).len(), 1);
    assert!(sessions(&srv, &carol, &id).is_empty());
    let out = srv.cli(&carol, &["session", "events", &session]);
    assert!(stderr(&out).contains("404"), "{}", stderr(&out));

    // Audited, with the hash of exactly the log that is served.
    let kinds = srv.audit_kinds(&format!("session:{session}"));
    assert_eq!(kinds, vec!["session.started", "session.ended"]);
    let export = srv.cli(&srv.admin, &["audit", "export"]);
    let ended: Value = String::from_utf8_lossy(&export.stdout)
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .find(|e| e["kind"] == "session.ended" && e["subject"] == format!("session:{session}"))
        .unwrap();
    assert_eq!(
        ended["data"]["recording_sha256"],
        hex::encode(Sha256::digest(&raw)),
        "{ended}"
    );
    assert_eq!(ended["data"]["end_reason"], "client_closed");
    assert_eq!(s["recording_sha256"], ended["data"]["recording_sha256"]);

    // pgbench, extended and prepared protocols, through one connect.
    let script = srv.dir.join("bench.sql");
    std::fs::write(
        &script,
        "\\set aid random(1, 1000)\nSELECT :aid::int + 1 AS next;\n",
    )
    .unwrap();
    for mode in ["extended", "prepared"] {
        let c = Connect::start(&srv, &alice, &id);
        let out = Command::new("pgbench")
            .args(["-n", "-t", "25", "-c", "2", "-M", mode, "-f"])
            .arg(&script)
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &c.port().to_string(),
                "-U",
                "x",
                "postgres",
            ])
            .output()
            .expect("run pgbench");
        assert!(out.status.success(), "pgbench -M {mode}: {}", stderr(&out));
        drop(c);
    }
    // psql, then pgbench's clients (and its own first connection) per mode.
    let deadline = Instant::now() + Duration::from_secs(10);
    let (mut total, mut all) = (0, vec![]);
    while Instant::now() < deadline && total != 100 {
        all = sessions(&srv, &alice, &id);
        if all.iter().all(|s| !s["ended_at"].is_null()) {
            total = all
                .iter()
                .filter(|s| s["id"] != session.as_str())
                .map(|s| {
                    events(&srv, &alice, s["id"].as_str().unwrap())
                        .0
                        .iter()
                        .filter(|e| {
                            e["statement"]
                                .as_str()
                                .unwrap()
                                .contains("::int + 1 AS next")
                        })
                        .inspect(|e| {
                            let p = e["params"][0].as_str().unwrap().parse::<u32>().unwrap();
                            assert!((1..=1000).contains(&p), "{e}");
                            assert_eq!(e["rows"], 1, "{e}");
                            assert_eq!(e["tag"], "SELECT 1", "{e}");
                        })
                        .count()
                })
                .sum();
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        total,
        100,
        "every pgbench statement logged with its parameter: {:?}",
        all.iter()
            .map(|s| events(&srv, &alice, s["id"].as_str().unwrap()).0)
            .collect::<Vec<_>>()
    );
    srv.kill9();
}

#[test]
fn the_grant_password_appears_in_no_response_log_or_audit_event() {
    let mut srv = Server::start(gateway_setup(Db::Sqlite, None));
    let (alice, bob) = (srv.token("alice"), srv.token("bob"));
    // `both`: the requester may read it, so the test knows what to look for.
    let id = grant(&srv, &alice, &bob, "payments-db-both", "1h");
    let password = srv.json(&alice, &["credentials", &id])["password"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(password.len() >= 40);
    let c = Connect::start(&srv, &alice, &id);
    let mut pg = c.pg();
    let row = pg.query_one("select $1::text", &[&"hello"]).unwrap();
    assert_eq!(row.get::<_, String>(0), "hello");
    drop(pg);
    let s = ended_session(&srv, &alice, &id, 10);
    drop(c);
    let session = s["id"].as_str().unwrap();
    let (_, log) = events(&srv, &srv.admin, session);
    let mut seen = String::from_utf8_lossy(&log).into_owned();
    for args in [
        vec!["session", "list"],
        vec!["show", &id],
        vec!["list"],
        vec!["audit", "export"],
    ] {
        let out = srv.cli(&srv.admin, &args);
        seen.push_str(&String::from_utf8_lossy(&out.stdout));
    }
    let gw = srv.http(
        "GET",
        &format!("/api/v1/requests/{id}/gateway"),
        Some(&alice),
        None,
    );
    assert_eq!(gw.0, 200, "{:?}", gw.2);
    seen.push_str(&gw.2.to_string());
    seen.push_str(&srv.log_text());
    assert!(
        seen.contains(session),
        "the checks read the session's traces"
    );
    assert!(!seen.contains(&password), "the grant's password leaked");
    srv.kill9();
}

#[test]
fn sessions_are_cut_at_not_after_on_revoke_on_lock_and_on_terminate() {
    let mut srv = Server::start(gateway_setup(Db::Sqlite, None));
    let (alice, bob, carol) = (srv.token("alice"), srv.token("bob"), srv.token("carol"));

    // not_after: an idle session is cut within a second, and connect exits 0.
    let id = grant(&srv, &alice, &bob, "payments-db-gateway", "4s");
    let not_after = rfc3339(&srv.json(&alice, &["show", &id])["not_after"]);
    let c = Connect::start(&srv, &alice, &id);
    let mut pg = c.pg();
    pg.simple_query("select 1").unwrap();
    let s = ended_session(&srv, &alice, &id, 15);
    assert_eq!(s["end_reason"], "not_after", "{s}");
    let late = rfc3339(&s["ended_at"]) - not_after;
    assert!(
        late < time::Duration::seconds(1),
        "cut {late} after not_after"
    );
    assert!(
        pg.simple_query("select 1").is_err(),
        "the connection is gone"
    );
    let (status, rest) = c.wait_exit(10);
    assert!(status.success(), "{status}");
    assert!(rest.contains("not_after"), "{rest}");

    // Revoke, lock and terminate: each cuts the session with its reason, and
    // a running statement is logged as cut.
    for (case, reason) in [
        ("revoke", "revoked"),
        ("terminate", "terminated"),
        ("lock", "locked"),
    ] {
        let id = grant(&srv, &alice, &bob, "payments-db-gateway", "1h");
        let c = Connect::start(&srv, &alice, &id);
        let mut pg = c.pg();
        let sleeper =
            std::thread::spawn(move || pg.simple_query("select pg_sleep(60)").map(|_| ()));
        let deadline = Instant::now() + Duration::from_secs(10);
        let session = loop {
            if let Some(s) = sessions(&srv, &alice, &id).first() {
                break s["id"].as_str().unwrap().to_string();
            }
            assert!(Instant::now() < deadline);
            std::thread::sleep(Duration::from_millis(50));
        };
        std::thread::sleep(Duration::from_millis(300));
        let at = time::OffsetDateTime::now_utc();
        match case {
            "revoke" => {
                srv.json(&bob, &["revoke", &id]);
            }
            "terminate" => {
                let out = srv.cli(&carol, &["session", "terminate", &session]);
                assert!(
                    stderr(&out).contains("404"),
                    "carol cannot: {}",
                    stderr(&out)
                );
                srv.json(&bob, &["session", "terminate", &session]);
            }
            _ => {
                srv.json(
                    &srv.admin,
                    &["lock", "user", "alice", "--reason", "INC-7 laptop"],
                );
            }
        }
        let s = ended_session(&srv, &srv.admin, &id, 10);
        assert_eq!(s["end_reason"], reason, "{case}: {s}");
        let took = rfc3339(&s["ended_at"]) - at;
        assert!(
            took < time::Duration::seconds(1),
            "{case}: cut after {took}"
        );
        // Revoke and lock also end the role's backends on the target, which
        // may answer first: either way the statement ends with 57P01.
        let err = sleeper
            .join()
            .unwrap()
            .expect_err("the running statement is cut");
        let err = err
            .as_db_error()
            .map(|d| d.message().to_string())
            .unwrap_or_else(|| err.to_string());
        assert!(
            err.contains("airlock") || err.contains("administrator command"),
            "{case}: {err}"
        );
        let (log, _) = events(&srv, &srv.admin, &session);
        let cut = log
            .iter()
            .find(|e| e["statement"] == "select pg_sleep(60)")
            .unwrap();
        assert!(cut["error"].as_str().unwrap().starts_with("57P01"), "{cut}");
        if case == "lock" {
            srv.json(&srv.admin, &["unlock", "user", "alice"]);
        }
        if case != "terminate" {
            let (status, rest) = c.wait_exit(10);
            assert!(status.success(), "{case}: {status}");
            assert!(
                rest.contains(reason) || rest.contains("revoked"),
                "{case}: {rest}"
            );
        }
    }
    srv.kill9();
}

#[test]
fn a_tcp_target_is_relayed_and_counted_with_half_close() {
    // An echo server that answers after the client finished sending.
    let echo = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = echo.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in echo.incoming().flatten() {
            std::thread::spawn(move || {
                let mut conn = conn;
                let mut all = Vec::new();
                let _ = conn.read_to_end(&mut all);
                let _ = conn.write_all(&all);
            });
        }
    });
    let mut srv = Server::start(gateway_setup(Db::Sqlite, Some(port)));
    let (alice, bob) = (srv.token("alice"), srv.token("bob"));
    let id = grant(&srv, &alice, &bob, "echo-tcp", "1h");
    let c = Connect::start(&srv, &alice, &id);
    let payload: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    let mut conn = TcpStream::connect(&c.addr).unwrap();
    conn.write_all(&payload).unwrap();
    conn.shutdown(std::net::Shutdown::Write).unwrap();
    let mut back = Vec::new();
    conn.read_to_end(&mut back).unwrap();
    assert!(
        back == payload,
        "echoed {} of {} bytes",
        back.len(),
        payload.len()
    );
    let s = ended_session(&srv, &alice, &id, 10);
    assert_eq!(s["kind"], "tcp");
    assert_eq!(s["bytes_up"], payload.len() as u64);
    assert_eq!(s["bytes_down"], payload.len() as u64);
    assert_eq!(s["end_reason"], "client_closed");
    srv.kill9();
}

#[test]
fn a_session_on_one_replica_is_cut_when_another_revokes_and_a_dead_replica_s_sessions_end() {
    // Sessions on a replica that dies end once their lease runs out.
    let mut a = Server::start(gateway_setup(Db::Postgres, None));
    let mut b = a.replica();
    let (alice, bob) = (a.token("alice"), a.token("bob"));
    let id = grant(&a, &alice, &bob, "payments-db-gateway", "1h");
    let c = Connect::start(&a, &alice, &id);
    let mut pg = c.pg();
    pg.simple_query("select 1").unwrap();
    let at = time::OffsetDateTime::now_utc();
    b.json(&bob, &["revoke", &id]);
    let s = ended_session(&b, &bob, &id, 10);
    assert_eq!(s["end_reason"], "revoked");
    let took = rfc3339(&s["ended_at"]) - at;
    assert!(took < time::Duration::seconds(1), "cut after {took}");
    drop(c);

    // A replica killed with its session open: the other ends the session as
    // `error` once its lease ran out, with the log written so far hashed.
    let id = grant(&a, &alice, &bob, "payments-db-gateway", "1h");
    let c = Connect::start(&a, &alice, &id);
    let mut pg = c.pg();
    pg.simple_query("select 'before the crash'").unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    a.kill9();
    drop(c);
    let s = ended_session(&b, &bob, &id, 25);
    assert_eq!(s["end_reason"], "error", "{s}");
    let (log, raw) = events(&b, &bob, s["id"].as_str().unwrap());
    assert!(
        log.iter()
            .any(|e| e["statement"] == "select 'before the crash'"),
        "{log:?}"
    );
    assert_eq!(s["recording_sha256"], hex::encode(Sha256::digest(&raw)));
    a.kill9();
    b.kill9();
}

/// The CA of the test server's certificate (scripts/test turns TLS on).
fn pg_ca() -> String {
    std::env::var("AIRLOCK_TEST_PG_CA").unwrap_or_else(|_| {
        panic!("AIRLOCK_TEST_PG_CA is not set: run ./scripts/test (it starts PostgreSQL with TLS and a throwaway CA)")
    })
}

/// A `tls = "require"` provider section and a gateway entitlement on it.
fn tls_section(prefix: &str, ca: &str) -> String {
    format!(
        r#"
[providers.pg-tls]
kind = "postgres"
url = "{url}"
role_prefix = "{prefix}"
tls = "require"
tls_ca_file = "{ca}"

[[entitlement]]
name = "tls-db"
provider = "pg-tls"
role = "{WRITER_ROLE}"
max_duration = "1h"
access = "gateway"
approvals = {{ count = 1, reviewers = ["payments-eng"] }}
"#,
        url = pg_url()
    )
}

#[test]
fn tls_require_encrypts_the_provider_and_gateway_connections_and_checks_the_certificate() {
    let prefix = unique("tls").to_lowercase() + "_";
    let mut setup = gateway_setup(Db::Sqlite, None);
    setup.extra.push_str(&tls_section(&prefix, &pg_ca()));
    let mut srv = Server::start(setup);
    let (alice, bob) = (srv.token("alice"), srv.token("bob"));
    let id = grant(&srv, &alice, &bob, "tls-db", "1h");
    // airlock's own connection (it stays open, cached) is TLS.
    let ssl: bool = pg()
        .query_one(
            "SELECT bool_and(s.ssl) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) \
             WHERE a.application_name = 'airlock pg-tls'",
            &[],
        )
        .unwrap()
        .get::<_, Option<bool>>(0)
        .expect("airlock's pg-tls connection is open");
    assert!(ssl, "the provider connects over TLS");
    // So is the gateway's, as the grant's role.
    let c = Connect::start(&srv, &alice, &id);
    let mut through = c.pg();
    let row = through
        .query_one(
            "SELECT ssl, current_user::text FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .unwrap();
    assert!(row.get::<_, bool>(0), "the gateway's upstream is TLS");
    assert_eq!(row.get::<_, String>(1), format!("{prefix}{id}"));
    drop(through);
    drop(c);
    srv.kill9();

    // A certificate from another CA is refused, saying so.
    let dir = std::env::temp_dir().join(unique("airlock-tls-"));
    std::fs::create_dir_all(&dir).unwrap();
    let other = dir.join("other-ca.crt");
    let made = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
        ])
        .args(["-nodes", "-days", "1", "-subj", "/CN=another CA", "-keyout"])
        .arg(dir.join("other-ca.key"))
        .arg("-out")
        .arg(&other)
        .output()
        .unwrap();
    assert!(made.status.success(), "{}", stderr(&made));
    let config = dir.join("airlock.toml");
    let alone = |ca: &std::path::Path| {
        tls_section("tlsx_", ca.to_str().unwrap()).replace(
            "approvals = { count = 1, reviewers = [\"payments-eng\"] }",
            "approvals = { count = 1, reviewers = [\"user:bob\"] }",
        )
    };
    std::fs::write(&config, alone(&other)).unwrap();
    let out = Command::new(BIN)
        .args(["doctor", "--output", "json", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let p = &v["providers"][0];
    assert_eq!(p["reachable"], false, "{v}");
    assert!(
        p["error"]
            .as_str()
            .unwrap()
            .to_lowercase()
            .contains("certificate"),
        "{v}"
    );
    // A CA file that is not PEM fails at start-up, naming the key's file.
    std::fs::write(dir.join("junk.crt"), "not a certificate").unwrap();
    std::fs::write(&config, alone(&dir.join("junk.crt"))).unwrap();
    let out = Command::new(BIN)
        .args(["doctor", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(stderr(&out).contains("tls_ca_file"), "{}", stderr(&out));
    let _ = std::fs::remove_dir_all(&dir);
}
