//! Signed webhooks: fan-out latency (audit event written → webhook received)
//! next to a plain HTTP POST round trip on loopback (the floor), and the
//! outbox drain rate after an outage next to raw sequential POSTs to the same
//! receiver. The server runs in-process (SQLite store), the receiver is a real
//! axum HTTP server on loopback.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{bail, Context, Result};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;

use crate::harness::{catalog, Server};
use crate::report::{Met, Row};
use crate::util::{percentile, sorted, unique_tag};
use crate::Ctx;

/// Seq and arrival time of each POST.
type Log = Arc<Mutex<Vec<(u64, SystemTime)>>>;

struct Receiver {
    addr: SocketAddr,
    log: Log,
    rt: Option<tokio::runtime::Runtime>,
}

impl Receiver {
    fn start() -> Result<Receiver> {
        let mut r = Receiver {
            addr: "127.0.0.1:0".parse()?,
            log: Arc::default(),
            rt: None,
        };
        r.up()?;
        Ok(r)
    }

    fn up(&mut self) -> Result<()> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()?;
        let listener = rt.block_on(tokio::net::TcpListener::bind(self.addr))?;
        self.addr = listener.local_addr()?;
        let app = axum::Router::new()
            .fallback(axum::routing::post(record))
            .with_state(self.log.clone());
        rt.spawn(async move { axum::serve(listener, app).await });
        self.rt = Some(rt);
        Ok(())
    }

    /// Runtime dropped: listener and connections closed, POSTs refused.
    fn down(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }

    fn seen(&self, seq: u64) -> Option<SystemTime> {
        let log = self.log.lock().unwrap();
        log.iter().rev().find(|(s, _)| *s == seq).map(|(_, t)| *t)
    }
}

async fn record(State(log): State<Log>, body: Bytes) -> StatusCode {
    let now = SystemTime::now();
    let seq = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v["seq"].as_u64())
        .unwrap_or(0);
    log.lock().unwrap().push((seq, now));
    StatusCode::NO_CONTENT
}

/// Writes one audit event (`token.created`) and returns its seq and `at`.
fn one_event(server: &Server, api: &crate::harness::Api) -> Result<(u64, SystemTime)> {
    api.token_for(&server.admin_token, "alice")?;
    let head = server.app.store.audit_head()?.context("no audit event")?;
    let ev = server.app.store.audit_events(head - 1, 1)?;
    let ev = ev
        .first()
        .and_then(|e| e.to_event())
        .context("event decodes")?;
    let at = time::OffsetDateTime::parse(&ev.at, &time::format_description::well_known::Rfc3339)?;
    Ok((
        ev.seq,
        SystemTime::UNIX_EPOCH + Duration::from_nanos(at.unix_timestamp_nanos() as u64),
    ))
}

fn wait_seen(rx: &Receiver, seq: u64, limit: Duration) -> Result<SystemTime> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(t) = rx.seen(seq) {
            return Ok(t);
        }
        if Instant::now() > deadline {
            bail!("webhook for seq {seq} not received within {limit:?}");
        }
        std::thread::sleep(Duration::from_micros(200));
    }
}

fn ms(s: f64) -> String {
    format!("{:.2} ms", s * 1e3)
}

/// Runs the measurements.
pub fn run(ctx: &Ctx) -> Result<Vec<Row>> {
    let samples = if ctx.quick { 100 } else { 300 };
    let queued = if ctx.quick { 300 } else { 1000 };
    let mut rx = Receiver::start()?;
    let dir = ctx.work_dir.join(format!("notify-{}", unique_tag()));
    std::fs::create_dir_all(&dir)?;
    let tag = unique_tag();
    let text = format!(
        "{}\n[[notify.webhook]]\nurl = \"http://{}/hook\"\nsecret = \"bench-secret\"\n",
        catalog(
            &ctx.pg_url,
            &format!("aln_{tag}_"),
            &format!("alnrole_{tag}"),
            ""
        ),
        rx.addr
    );
    let server = Server::start(
        &text,
        &dir,
        &format!("sqlite://{}", dir.join("airlock.db").display()),
    )?;
    let api = server.api();
    std::thread::sleep(Duration::from_millis(300)); // the sink takes its start at the head

    // 1. Fan-out latency, one event at a time (no queueing).
    let mut lat = vec![];
    for _ in 0..samples {
        let (seq, at) = one_event(&server, &api)?;
        let got = wait_seen(&rx, seq, Duration::from_secs(10))?;
        lat.push(got.duration_since(at).unwrap_or_default().as_secs_f64());
    }
    let lat = sorted(lat);

    // The floor: the same receiver, plain POSTs of a similar body with reqwest.
    let body = serde_json::to_vec(&serde_json::json!({
        "seq": 1, "kind": "token.created", "at": "2026-01-01T00:00:00Z", "actor": "admin",
        "subject": "user:alice", "data": {"user": "alice"}, "hash": "0".repeat(64)
    }))?;
    let client_rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let url = format!("http://{}/floor", rx.addr);
    let post = |n: usize| -> Result<Vec<f64>> {
        // A fresh pool each time: the receiver's outage closed the old connections.
        let client = reqwest::Client::new();
        client_rt.block_on(async {
            let mut out = Vec::with_capacity(n);
            for _ in 0..n {
                let t = Instant::now();
                let r = client
                    .post(&url)
                    .header("Content-Type", "application/json")
                    .body(body.clone())
                    .send()
                    .await?;
                r.bytes().await?;
                out.push(t.elapsed().as_secs_f64());
            }
            Ok(out)
        })
    };
    let floor = sorted(post(samples)?);

    // 2. Drain after an outage: queue events while the receiver is down.
    rx.down();
    let mut last = 0;
    for _ in 0..queued {
        api.token_for(&server.admin_token, "alice")?;
        last = server.app.store.audit_head()?.unwrap_or(0);
    }
    let first = last + 1 - queued as u64;
    rx.up()?;
    let back = Instant::now();
    let t_last = wait_seen(&rx, last, Duration::from_secs(120))?;
    let t_first = rx.seen(first).context("first queued event")?;
    let wait_first = back.elapsed();
    let drain = t_last
        .duration_since(t_first)
        .unwrap_or_default()
        .as_secs_f64();
    let rate = (queued - 1) as f64 / drain.max(1e-9);
    let t = Instant::now();
    post(queued)?;
    let raw_rate = queued as f64 / t.elapsed().as_secs_f64();
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);

    let (p50, p99) = (percentile(&lat, 50.0), percentile(&lat, 99.0));
    let (f50, f99) = (percentile(&floor, 50.0), percentile(&floor, 99.0));
    Ok(vec![
        Row {
            figure: format!("webhook fan-out latency, audit event written → received, loopback, SQLite, p50 / p99 ({samples} events)"),
            measured: format!("{} / {}", ms(p50), ms(p99)),
            peer: format!("plain HTTP POST round trip to the same receiver: {} / {}", ms(f50), ms(f99)),
            ratio: format!("{:.1}× / {:.1}×", p50 / f50, p99 / f99),
            goal: "p99 < 100 ms".into(),
            met: Met::from(p99 < 0.1),
        },
        Row {
            figure: format!("webhook outbox drain after an outage ({queued} events queued while the receiver was down)"),
            measured: format!(
                "{rate:.0} events/s (first delivery {:.1} s after the receiver came back: retry backoff)",
                wait_first.as_secs_f64() - drain
            ),
            peer: format!("raw sequential POSTs, same receiver: {raw_rate:.0}/s"),
            ratio: format!("{:.0}%", 100.0 * rate / raw_rate),
            goal: "≥ 500 events/s".into(),
            met: Met::from(rate >= 500.0),
        },
    ])
}
