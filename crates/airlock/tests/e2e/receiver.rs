//! A real webhook receiver for the notification tests: an HTTP server (axum)
//! on a fixed loopback port that records every POST and can be taken down
//! (its runtime dropped: listener and open connections closed) and brought back.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use serde_json::Value;

/// One POST as the receiver saw it.
#[derive(Clone, Debug)]
pub struct Hit {
    pub signature: String,
    pub delivery: String,
    pub content_type: String,
    pub body: Vec<u8>,
}

impl Hit {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("webhook body is JSON")
    }

    pub fn seq(&self) -> u64 {
        self.json()["seq"].as_u64().expect("seq")
    }

    /// Checks `X-Airlock-Signature` (`t=…,v1=…`) against `secret`, and that
    /// the timestamp is recent (what a receiver must do against replays).
    pub fn signature_valid(&self, secret: &str) -> bool {
        let Some((t, _)) = self
            .signature
            .strip_prefix("t=")
            .and_then(|r| r.split_once(','))
        else {
            return false;
        };
        let Ok(t) = t.parse::<i64>() else {
            return false;
        };
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let want = airlock_core::notify::webhook_signature(secret.as_bytes(), t, &self.body);
        (now - t).abs() < 300 && airlock_core::notify::signatures_equal(&want, &self.signature)
    }
}

#[derive(Clone)]
struct Shared {
    hits: Arc<Mutex<Vec<Hit>>>,
}

/// The receiver; `hits` survive downtime.
pub struct Receiver {
    pub addr: SocketAddr,
    hits: Arc<Mutex<Vec<Hit>>>,
    rt: Option<tokio::runtime::Runtime>,
}

impl Receiver {
    /// Starts on a free loopback port.
    pub fn start() -> Receiver {
        let mut r = Receiver {
            addr: "127.0.0.1:0".parse().unwrap(),
            hits: Arc::default(),
            rt: None,
        };
        r.up();
        r
    }

    /// `http://127.0.0.1:PORT{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// (Re)starts serving on the same port.
    pub fn up(&mut self) {
        assert!(self.rt.is_none(), "receiver already up");
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let want = self.addr;
        let listener = rt.block_on(async {
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                match tokio::net::TcpListener::bind(want).await {
                    Ok(l) => return l,
                    Err(e) if Instant::now() < deadline => {
                        eprintln!("receiver bind {want}: {e}; retrying");
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                    Err(e) => panic!("receiver cannot bind {want}: {e}"),
                }
            }
        });
        self.addr = listener.local_addr().unwrap();
        let app = axum::Router::new()
            .fallback(axum::routing::post(record))
            .with_state(Shared {
                hits: self.hits.clone(),
            });
        rt.spawn(async move { axum::serve(listener, app).await });
        self.rt = Some(rt);
    }

    /// Stops serving: connections are refused until [`Receiver::up`].
    pub fn down(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }

    /// Deliveries of audit events (signed tree heads are in [`checkpoints`](Self::checkpoints)).
    pub fn hits(&self) -> Vec<Hit> {
        let all = self.hits.lock().unwrap().clone();
        all.into_iter()
            .filter(|h| !h.delivery.starts_with("checkpoint-"))
            .collect()
    }

    /// Deliveries of signed tree heads (`audit.checkpoint`).
    pub fn checkpoints(&self) -> Vec<Hit> {
        let all = self.hits.lock().unwrap().clone();
        all.into_iter()
            .filter(|h| h.delivery.starts_with("checkpoint-"))
            .collect()
    }

    /// Waits until a hit satisfies `pred` (panics after `secs`).
    pub fn wait_for(&self, secs: u64, what: &str, pred: impl Fn(&[Hit]) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(secs);
        while !pred(&self.hits()) {
            assert!(
                Instant::now() < deadline,
                "receiver: timed out waiting for {what}; got seqs {:?}",
                self.hits().iter().map(Hit::seq).collect::<Vec<_>>()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.down();
    }
}

async fn record(State(s): State<Shared>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let h = |n: &str| {
        headers
            .get(n)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    s.hits.lock().unwrap().push(Hit {
        signature: h("x-airlock-signature"),
        delivery: h("x-airlock-delivery"),
        content_type: h("content-type"),
        body: body.to_vec(),
    });
    StatusCode::NO_CONTENT
}
