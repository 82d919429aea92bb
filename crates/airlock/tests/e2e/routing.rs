//! Service catalog routing (owners review, `catalog_url` with a last good
//! copy that survives outages and restarts), MFA-required entitlements, and
//! the time-to-access metrics.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::kit::*;

/// `[[service]]`-routed entitlements on the test PostgreSQL provider.
fn routed_catalog(prefix: &str, services: &str) -> String {
    format!(
        r#"
[[group]]
name = "payments-eng"
members = ["alice", "bob"]

# Owner in the remote catalog: a user, not a group.
[[user]]
name = "carol"

{services}

[providers.pg-main]
kind = "postgres"
url = "{url}"
role_prefix = "{prefix}"

[[entitlement]]
name = "payments-db-write"
provider = "pg-main"
role = "{WRITER_ROLE}"
max_duration = "1h"
service = "payments"
approvals = {{ count = 1 }}

[[entitlement]]
name = "payments-db-mfa"
provider = "pg-main"
role = "{WRITER_ROLE}"
max_duration = "1h"
mfa = true
approvals = {{ count = 1, reviewers = ["payments-eng"] }}

[[entitlement]]
name = "payments-breakglass"
provider = "pg-main"
role = "{WRITER_ROLE}"
max_duration = "30m"
breakglass = true
requesters = ["payments-eng"]
approvals = {{ count = 0, reviewers = ["payments-eng"] }}
"#,
        url = pg_url()
    )
}

fn request(s: &Server, token: &str, ent: &str) -> String {
    id_of(&s.json(
        token,
        &["request", ent, "--for", "10m", "--reason", "INC-1"],
    ))
}

#[test]
fn service_owners_review_entitlements_that_name_no_reviewers() {
    let prefix = unique("rt").to_lowercase().replace('-', "") + "_";
    let services = "[[service]]\nname = \"payments\"\nowners = [\"payments-eng\"]\nslack_channel = \"#payments-oncall\"\nemail = \"payments-oncall@example.com\"\n";
    let mut setup = Setup::new(Db::Sqlite);
    setup.catalog = Some(routed_catalog(&prefix, services));
    let s = Server::start(setup);
    let (alice, bob, carol) = (s.token("alice"), s.token("bob"), s.token("carol"));
    let ents = s.json(&alice, &["entitlements"]);
    let ent = ents
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "payments-db-write")
        .unwrap();
    assert_eq!(
        ent["approvals"]["reviewers"],
        serde_json::json!(["payments-eng"])
    );
    assert_eq!(ent["service"], "payments");

    let id = request(&s, &alice, "payments-db-write");
    let refused = s.cli(&carol, &["review", &id, "--approve"]);
    assert_eq!(refused.status.code(), Some(1), "carol owns nothing");
    assert!(
        stderr(&refused).contains("payments-eng"),
        "{}",
        stderr(&refused)
    );
    s.json(&bob, &["review", &id, "--approve"]);
    s.wait_for(&alice, &id, 10, |r| r["state"] == "active");
}

#[test]
fn unknown_service_in_the_file_is_refused_at_start_up() {
    let err = serve_error(&format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n{}",
        routed_catalog("x_", "")
    ));
    assert!(
        err.contains("service `payments` is not defined") && err.contains("catalog_url"),
        "{err}"
    );
}

/// A tiny catalog endpoint: serves the current document, or 503 when `None`.
struct CatalogServer {
    url: String,
    doc: Arc<Mutex<Option<String>>>,
}

impl CatalogServer {
    fn start(doc: &str) -> CatalogServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/services.json", listener.local_addr().unwrap());
        let doc = Arc::new(Mutex::new(Some(doc.to_string())));
        let shared = doc.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { continue };
                let mut reader = BufReader::new(conn.try_clone().unwrap());
                let mut line = String::new();
                // Read the request head; the body is empty for GET.
                while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
                    line.clear();
                }
                let reply = match shared.lock().unwrap().clone() {
                    Some(d) => format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{d}",
                        d.len()
                    ),
                    None => "HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\nconnection: close\r\n\r\n".to_string(),
                };
                let _ = conn.write_all(reply.as_bytes());
            }
        });
        CatalogServer { url, doc }
    }

    fn set(&self, doc: Option<&str>) {
        *self.doc.lock().unwrap() = doc.map(str::to_string);
    }
}

fn reviewers_of(s: &Server, token: &str, ent: &str) -> serde_json::Value {
    let ents = s.json(token, &["entitlements"]);
    ents.as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == ent)
        .unwrap()["approvals"]["reviewers"]
        .clone()
}

fn wait_reviewers(s: &Server, token: &str, want: serde_json::Value) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while reviewers_of(s, token, "payments-db-write") != want {
        assert!(Instant::now() < deadline, "reviewers never became {want}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn catalog_url_routes_reviews_and_keeps_the_last_good_copy() {
    let catalog = CatalogServer::start(r#"{"services":[{"name":"payments","owners":["carol"]}]}"#);
    let prefix = unique("rt").to_lowercase().replace('-', "") + "_";
    let mut setup = Setup::new(Db::Sqlite);
    setup.catalog = Some(routed_catalog(&prefix, ""));
    setup.server_extra = format!(
        "catalog_url = \"{}\"\ncatalog_refresh = \"1s\"\n",
        catalog.url
    );
    let mut s = Server::start(setup);
    let (alice, bob, carol) = (s.token("alice"), s.token("bob"), s.token("carol"));
    // Loaded before the first request is served.
    assert_eq!(
        reviewers_of(&s, &alice, "payments-db-write"),
        serde_json::json!(["carol"])
    );
    let id = request(&s, &alice, "payments-db-write");
    assert_eq!(
        s.cli(&bob, &["review", &id, "--approve"]).status.code(),
        Some(1)
    );
    s.json(&carol, &["review", &id, "--approve"]);

    // The catalog changes: bob's group now owns payments.
    catalog.set(Some(r#"[{"name":"payments","owners":["payments-eng"]}]"#));
    wait_reviewers(&s, &alice, serde_json::json!(["payments-eng"]));

    // The catalog goes down: the last good copy stays in force...
    catalog.set(None);
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(
        reviewers_of(&s, &alice, "payments-db-write"),
        serde_json::json!(["payments-eng"])
    );
    let (_, _, metrics) = s.http("GET", "/metrics", None, None);
    let metrics = metrics.as_str().unwrap().to_string();
    assert!(
        !metrics.contains("airlock_catalog_fetch_failures_total 0"),
        "{metrics}"
    );

    // ...and across a restart while it is still down.
    s.kill9();
    s.boot();
    assert_eq!(
        reviewers_of(&s, &alice, "payments-db-write"),
        serde_json::json!(["payments-eng"])
    );
    let id = request(&s, &alice, "payments-db-write");
    s.json(&bob, &["review", &id, "--approve"]);

    // A broken document never replaces the good copy.
    catalog.set(Some(r#"{"services":[{"name":"payments","owner":["x"]}]}"#));
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(
        reviewers_of(&s, &alice, "payments-db-write"),
        serde_json::json!(["payments-eng"])
    );
    assert!(s.log_text().contains("keeping the last good copy"));
}

#[test]
fn mfa_required_entitlement_is_refused_without_an_mfa_login() {
    let prefix = unique("rt").to_lowercase().replace('-', "") + "_";
    let services = "[[service]]\nname = \"payments\"\nowners = [\"payments-eng\"]\n";
    let mut setup = Setup::new(Db::Sqlite);
    setup.catalog = Some(routed_catalog(&prefix, services));
    let s = Server::start(setup);
    let alice = s.token("alice");
    let out = s.cli(
        &alice,
        &[
            "request",
            "payments-db-mfa",
            "--for",
            "10m",
            "--reason",
            "INC-1",
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("requires a multi-factor login") && err.contains("airlock login"),
        "{err}"
    );
    let mine = s.json(&alice, &["list", "--mine"]);
    assert_eq!(mine.as_array().map(Vec::len), Some(0), "{mine}");
}

#[test]
fn metrics_show_time_to_review_and_access_by_surface() {
    let prefix = unique("rt").to_lowercase().replace('-', "") + "_";
    let services = "[[service]]\nname = \"payments\"\nowners = [\"payments-eng\"]\n";
    let mut setup = Setup::new(Db::Sqlite);
    setup.catalog = Some(routed_catalog(&prefix, services));
    let s = Server::start(setup);
    let (alice, bob) = (s.token("alice"), s.token("bob"));
    let id = request(&s, &alice, "payments-db-write");
    let _waiting = request(&s, &alice, "payments-db-write");
    s.json(&bob, &["review", &id, "--approve"]);
    s.wait_for(&alice, &id, 10, |r| r["state"] == "active");
    s.json(
        &alice,
        &[
            "breakglass",
            "payments-breakglass",
            "--for",
            "5m",
            "--reason",
            "INC-9 outage",
        ],
    );
    let (status, _, body) = s.http("GET", "/metrics", None, None);
    assert_eq!(status, 200);
    let m = body.as_str().unwrap();
    for want in [
        "airlock_time_to_first_review_seconds_count{entitlement=\"payments-db-write\",surface=\"cli\"} 1",
        "airlock_time_to_access_seconds_count{entitlement=\"payments-db-write\",surface=\"cli\"} 1",
        "airlock_breakglass_activations_total{entitlement=\"payments-breakglass\"} 1",
        "airlock_pending_requests{age=\"5m\"} 1",
    ] {
        assert!(m.contains(want), "missing {want} in:\n{m}");
    }
}

#[test]
fn metrics_token_is_required_when_set_and_metrics_listen_moves_the_endpoint() {
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = free.local_addr().unwrap().port();
    drop(free);
    let mut setup = Setup::new(Db::Sqlite);
    setup.server_extra = format!(
        "metrics_token = \"metrics-secret-0123456789\"\nmetrics_listen = \"127.0.0.1:{port}\"\n"
    );
    let s = Server::start(setup);
    let (status, _, _) = s.http("GET", "/metrics", None, None);
    assert_eq!(status, 404, "the main listener does not serve /metrics");
    let get = |token: Option<&str>| {
        let mut req = ureq::get(&format!("http://127.0.0.1:{port}/metrics"));
        if let Some(t) = token {
            req = req.set("Authorization", &format!("Bearer {t}"));
        }
        match req.call() {
            Ok(r) => (r.status(), r.into_string().unwrap_or_default()),
            Err(ureq::Error::Status(code, r)) => (code, r.into_string().unwrap_or_default()),
            Err(e) => panic!("transport error: {e}"),
        }
    };
    assert_eq!(get(None).0, 401);
    assert_eq!(get(Some("metrics-secret-wrong")).0, 401);
    let (status, body) = get(Some("metrics-secret-0123456789"));
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("airlock_breakglass_open_reviews 0"), "{body}");
}
