//! The PostgreSQL store's database goes away and comes back: writes are
//! refused with 503 + `Retry-After` (never a hang, never a 500), and the
//! replica recovers by itself. The database is real; the outage is a real
//! loopback forwarder between airlock and it that the test cuts.

use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::kit::*;
use crate::proxy_kit::post_raw;

/// A TCP forwarder to PostgreSQL that can be cut (open connections reset,
/// new ones closed at once) and restored.
struct Forwarder {
    port: u16,
    up: Arc<AtomicBool>,
    open: Arc<Mutex<Vec<TcpStream>>>,
}

impl Forwarder {
    fn start() -> Forwarder {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let up = Arc::new(AtomicBool::new(true));
        let open: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let (host, pg_port) = pg_host_port();
        let (up2, open2) = (up.clone(), open.clone());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                if !up2.load(Ordering::SeqCst) {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                }
                let Ok(server) = TcpStream::connect((host.as_str(), pg_port)) else {
                    continue;
                };
                let mut guard = open2.lock().unwrap();
                guard.push(client.try_clone().unwrap());
                guard.push(server.try_clone().unwrap());
                drop(guard);
                for (mut from, mut to) in [
                    (client.try_clone().unwrap(), server.try_clone().unwrap()),
                    (server, client),
                ] {
                    std::thread::spawn(move || {
                        let _ = std::io::copy(&mut from, &mut to);
                        let _ = to.shutdown(Shutdown::Write);
                    });
                }
            }
        });
        Forwarder { port, up, open }
    }

    fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        for s in self.open.lock().unwrap().drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
    }

    fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}

fn ask(s: &Server, token: &str, reason: &str) -> (u16, Option<String>, serde_json::Value) {
    post_raw(
        s,
        "/api/v1/requests",
        token,
        &json!({"entitlement": "payments-db-write", "duration": "10m", "reason": reason}),
    )
}

#[test]
fn a_lost_database_gets_503_with_retry_after_and_the_replica_recovers_by_itself() {
    let fwd = Forwarder::start();
    let mut setup = Setup::new(Db::Postgres);
    setup.store_port = Some(fwd.port);
    let s = Server::start(setup);
    let alice = s.token("alice");
    let (status, _, body) = ask(&s, &alice, "INC-1 before the outage");
    assert_eq!(status, 201, "{body}");

    fwd.cut();
    let asked = Instant::now();
    let (status, retry_after, body) = ask(&s, &alice, "INC-2 during the outage");
    assert_eq!(status, 503, "{body}");
    assert!(
        retry_after.is_some_and(|v| v.parse::<u64>().is_ok()),
        "{body}"
    );
    assert!(
        body["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("database unavailable"),
        "{body}"
    );
    // Bounded by the pool's checkout timeout, not by the HTTP client's.
    assert!(asked.elapsed() < Duration::from_secs(25));

    fwd.restore();
    let deadline = Instant::now() + Duration::from_secs(20);
    let id = loop {
        let (status, _, body) = ask(&s, &alice, "INC-3 after the outage");
        if status == 201 {
            break body["id"].as_str().unwrap().to_string();
        }
        assert_eq!(status, 503, "only 503 while it recovers: {body}");
        assert!(
            Instant::now() < deadline,
            "never recovered: {body}\nlog: {}",
            s.log_text()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(s.json(&alice, &["show", &id])["state"], "pending");
    let mine = s.json(&alice, &["list"]);
    let reasons: Vec<&str> = mine
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["reason"].as_str())
        .collect();
    assert!(
        !reasons.contains(&"INC-2 during the outage"),
        "a refused write must leave nothing behind: {reasons:?}"
    );
    let v = s.json(&s.admin, &["audit", "verify"]);
    assert_eq!(v["ok"], true, "{v}");
}
