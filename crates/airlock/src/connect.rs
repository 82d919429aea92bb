//! `airlock connect` (a local listener whose every connection is one gateway
//! session, tunnelled over a WebSocket to the server) and `airlock session …`.

use std::time::Duration;

use airlock_api::requests::RequestView;
use airlock_api::sessions::{GatewayInfo, SessionView, TUNNEL_PROTOCOL};
use anyhow::{anyhow, bail, Context, Result};
use clap::Subcommand;
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::Message;

use crate::client::Client;
use crate::{emit_as, Output};

/// How often `connect` asks whether the grant is still active.
const POLL: Duration = Duration::from_secs(2);
/// How long after `not_after` connect exits by itself if the server said nothing.
const GRACE: Duration = Duration::from_secs(3);
/// Bytes read from the local side per WebSocket message.
const CHUNK: usize = 64 * 1024;

/// `airlock session …`.
#[derive(Subcommand)]
pub enum SessionCommand {
    /// Gateway sessions I may read (mine, those I review; all for admins and auditors).
    List {
        /// Only this request's sessions.
        #[arg(long)]
        request: Option<String>,
    },
    /// What happened in a session: for PostgreSQL, every statement (JSON Lines with --output json).
    Events { session: String },
    /// End a session now (the entitlement's reviewers, admins).
    Terminate { session: String },
    /// Replay an SSH session's terminal as it was shown (asciicast v2; with
    /// --output json, print the recording itself).
    Play {
        session: String,
        /// Play this many times faster (0.1 to 1000).
        #[arg(long, default_value_t = 1.0)]
        speed: f64,
    },
}

fn session_id(s: &str) -> Result<&str> {
    if !s.starts_with("ses_") || !s[4..].bytes().all(|b| b.is_ascii_alphanumeric()) {
        bail!("`{s}` is not a session id (they look like ses_…, see `airlock session list`)");
    }
    Ok(s)
}

fn session_line(s: &SessionView) -> String {
    format!(
        "{}  {:<8} {:<24} {:<12} {}  {}  up {} B  down {} B  {}",
        s.id,
        s.kind,
        s.entitlement,
        s.user,
        s.started_at,
        s.ended_at.as_deref().unwrap_or("open"),
        s.bytes_up,
        s.bytes_down,
        s.end_reason.as_deref().unwrap_or("")
    )
}

/// Runs `airlock session …`.
pub fn session(client: &Client, out: Output, command: SessionCommand) -> Result<i32> {
    match command {
        SessionCommand::List { request } => {
            let path = match request {
                Some(r) => format!("/api/v1/sessions?request={}", crate::path_id(&r)?),
                None => "/api/v1/sessions".to_string(),
            };
            let list: Vec<SessionView> = client.get_as(&path)?;
            emit_as(out, &list, |l| {
                if l.is_empty() {
                    "no sessions".into()
                } else {
                    l.iter().map(session_line).collect::<Vec<_>>().join("\n")
                }
            });
        }
        SessionCommand::Events { session } => {
            let body = client.get_bytes(
                &format!("/api/v1/sessions/{}/events", session_id(&session)?),
                1 << 30,
            )?;
            let text = String::from_utf8_lossy(&body);
            for line in text.lines() {
                match out {
                    Output::Json => say!("{line}"),
                    Output::Text => say!("{}", event_line(line)),
                }
            }
        }
        SessionCommand::Play { session, speed } => {
            if !(0.1..=1000.0).contains(&speed) {
                bail!("--speed {speed} is out of range: give a factor from 0.1 to 1000 (2 plays twice as fast)");
            }
            let body = client.get_bytes(
                &format!("/api/v1/sessions/{}/recording", session_id(&session)?),
                1 << 30,
            )?;
            match out {
                Output::Json => {
                    use std::io::Write;
                    let mut stdout = std::io::stdout().lock();
                    stdout.write_all(&body)?;
                    stdout.flush()?;
                }
                Output::Text => play(&body, speed)?,
            }
        }
        SessionCommand::Terminate { session } => {
            let s: SessionView = client.post_as(
                &format!("/api/v1/sessions/{}/terminate", session_id(&session)?),
                &serde_json::json!({}),
            )?;
            emit_as(out, &s, |s| {
                format!("terminating {} (ends within a second)", s.id)
            });
        }
    }
    Ok(0)
}

/// Writes an asciicast v2 recording's output to the terminal at its pace
/// divided by `speed`.
fn play(recording: &[u8], speed: f64) -> Result<()> {
    use std::io::Write;
    let text = std::str::from_utf8(recording)
        .map_err(|_| anyhow!("the recording is not UTF-8 text; is this an SSH session?"))?;
    let mut lines = text.lines();
    let header: serde_json::Value = lines
        .next()
        .and_then(|l| serde_json::from_str(l).ok())
        .ok_or_else(|| anyhow!("the session has no terminal recording (yet)"))?;
    if header["version"] != 2 {
        bail!("the recording is not asciicast v2 (only SSH sessions are played; see `airlock session events` for others)");
    }
    let start = std::time::Instant::now();
    let mut stdout = std::io::stdout().lock();
    for line in lines {
        let Ok(serde_json::Value::Array(e)) = serde_json::from_str(line) else {
            continue;
        };
        let (Some(at), Some("o"), Some(data)) = (
            e.first().and_then(|t| t.as_f64()),
            e.get(1).and_then(|k| k.as_str()),
            e.get(2).and_then(|d| d.as_str()),
        ) else {
            continue;
        };
        let due = Duration::from_secs_f64((at / speed).max(0.0));
        if let Some(wait) = due.checked_sub(start.elapsed()) {
            std::thread::sleep(wait);
        }
        stdout.write_all(data.as_bytes())?;
        stdout.flush()?;
    }
    Ok(())
}

/// One query-log line for people: time, duration, rows, statement, error.
fn event_line(line: &str) -> String {
    let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
        return line.to_string();
    };
    let s = |k: &str| v[k].as_str().unwrap_or_default().to_string();
    let mut text = format!(
        "{}  {:>9.3} ms  {:>6} rows  {}",
        s("at"),
        v["duration_ms"].as_f64().unwrap_or(0.0),
        v["rows"].as_u64().unwrap_or(0),
        s("statement").replace('\n', " ")
    );
    if let Some(p) = v["params"].as_array().filter(|p| !p.is_empty()) {
        text.push_str(&format!("  params {}", serde_json::Value::Array(p.clone())));
    }
    if let Some(e) = v["error"].as_str() {
        text.push_str(&format!("  ERROR {e}"));
    }
    text
}

/// How `airlock connect` was asked to run.
pub struct ConnectArgs {
    pub id: String,
    pub listen: Option<String>,
    pub stdio: bool,
    pub command: Vec<String>,
}

/// Runs `airlock connect`.
pub fn connect(client: &Client, out: Output, args: ConnectArgs) -> Result<i32> {
    let id = crate::path_id(&args.id)?.to_string();
    // Refused here (not yet active, not the requester, access = credentials)
    // with the server's own words, before anything listens.
    let info: GatewayInfo = client.get_as(&format!("/api/v1/requests/{id}/gateway"))?;
    let url = tunnel_url(client.addr(), &id)?;
    let token = client.token().map(str::to_string);
    // One thread: a relay is all waiting on sockets, and waking a second
    // thread per message costs more than it gains (measured with pgbench).
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let addr_text = client.addr().to_string();
    rt.block_on(async move {
        let tunnel = Tunnel { url, token };
        if args.stdio {
            let stdio = tokio::io::join(tokio::io::stdin(), tokio::io::stdout());
            let reason = tunnel.relay(stdio).await?;
            eprintln!("airlock: session ended ({reason})");
            return Ok(0);
        }
        let listen = args.listen.as_deref().unwrap_or("127.0.0.1:0");
        let listener = TcpListener::bind(listen)
            .await
            .with_context(|| format!("cannot listen on {listen}"))?;
        let addr = listener.local_addr()?;
        match out {
            Output::Json => say!(
                "{}",
                serde_json::json!({"listen": addr.to_string(), "request": id})
            ),
            Output::Text => say!("listening on {addr}"),
        }
        let (ended_tx, mut ended) = tokio::sync::mpsc::unbounded_channel::<String>();
        // The grant's own end, even with no session open.
        let watch_tx = ended_tx.clone();
        let watched = id.clone();
        let poll_token = tunnel.token.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(POLL).await;
                let c = Client::new(&addr_text, poll_token.clone());
                let path = format!("/api/v1/requests/{watched}");
                let state = tokio::task::spawn_blocking(move || c.get_as::<RequestView>(&path))
                    .await
                    .ok()
                    .and_then(Result::ok)
                    .map(|r| r.state);
                match state.as_deref() {
                    Some("active") | None => continue,
                    Some(other) => {
                        let _ = watch_tx.send(match other {
                            "expired" => "not_after".to_string(),
                            o => o.to_string(),
                        });
                        return;
                    }
                }
            }
        });
        // A fallback only: the server cuts the sessions at not_after and says
        // why; exiting first would end them as closed by the client.
        let deadline = deadline_of(&info.not_after) + GRACE;
        let mut child = match args.command.split_first() {
            None => None,
            Some((program, rest)) => {
                let mut cmd = tokio::process::Command::new(program);
                cmd.args(rest)
                    .env("AIRLOCK_CONNECT_ADDR", addr.to_string())
                    .kill_on_drop(true);
                if info.kind == "postgres" {
                    cmd.env("PGHOST", addr.ip().to_string())
                        .env("PGPORT", addr.port().to_string())
                        .env("PGUSER", "airlock")
                        .env("PGSSLMODE", "disable")
                        .env("PGDATABASE", info.database.clone().unwrap_or_default());
                }
                Some(
                    cmd.spawn()
                        .with_context(|| format!("cannot start `{program}`"))?,
                )
            }
        };
        let tunnel = std::sync::Arc::new(tunnel);
        loop {
            tokio::select! {
                conn = listener.accept() => {
                    let (conn, _) = conn?;
                    let _ = conn.set_nodelay(true);
                    let (t, tx) = (tunnel.clone(), ended_tx.clone());
                    tokio::spawn(async move {
                        match t.relay(conn).await {
                            Ok(r) if matches!(r.as_str(), "not_after" | "revoked" | "locked") => {
                                let _ = tx.send(r);
                            }
                            Ok(_) => {}
                            Err(e) => eprintln!("airlock: {e:#}"),
                        }
                    });
                }
                why = ended.recv() => {
                    let why = why.unwrap_or_else(|| "error".into());
                    say_ended(out, &id, &why);
                    return Ok(0);
                }
                _ = tokio::time::sleep_until(deadline) => {
                    say_ended(out, &id, "not_after");
                    return Ok(0);
                }
                status = async {
                    match child.as_mut() {
                        Some(c) => c.wait().await,
                        None => std::future::pending().await,
                    }
                } => {
                    return Ok(status?.code().unwrap_or(1));
                }
                _ = tokio::signal::ctrl_c() => return Ok(0),
            }
        }
    })
}

fn say_ended(out: Output, id: &str, why: &str) {
    match out {
        Output::Json => say!("{}", serde_json::json!({"ended": why, "request": id})),
        Output::Text => say!("grant {id} ended ({why}): airlock connect exits"),
    }
}

/// The tokio instant of an RFC 3339 time (far ahead if it does not parse).
fn deadline_of(t: &str) -> tokio::time::Instant {
    let left = time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339)
        .map(|t| t - time::OffsetDateTime::now_utc())
        .ok()
        .and_then(|d| Duration::try_from(d.max(time::Duration::ZERO)).ok())
        .unwrap_or(Duration::from_secs(365 * 86_400));
    tokio::time::Instant::now() + left
}

/// `ws://HOST/api/v1/requests/ID/connect` from `AIRLOCK_ADDR`.
fn tunnel_url(addr: &str, id: &str) -> Result<String> {
    let rest = addr
        .strip_prefix("http://")
        .ok_or_else(|| anyhow!("AIRLOCK_ADDR `{addr}`: airlock connect speaks http:// only (put TLS in front, like the rest of the CLI)"))?;
    Ok(format!(
        "ws://{}/api/v1/requests/{id}/connect",
        rest.trim_end_matches('/')
    ))
}

/// Opens one WebSocket per session.
struct Tunnel {
    url: String,
    token: Option<String>,
}

impl Tunnel {
    /// Relays `local` through a new tunnel until either side ends; the
    /// server's reason (its close frame), or `client_closed`.
    async fn relay<L: AsyncRead + AsyncWrite + Unpin>(&self, local: L) -> Result<String> {
        let mut req = self.url.as_str().into_client_request()?;
        if let Some(t) = &self.token {
            req.headers_mut().insert(
                "Authorization",
                HeaderValue::from_str(&format!("Bearer {t}"))?,
            );
        }
        req.headers_mut().insert(
            "Sec-WebSocket-Protocol",
            HeaderValue::from_static(TUNNEL_PROTOCOL),
        );
        let host = req
            .uri()
            .authority()
            .map(|a| a.to_string())
            .ok_or_else(|| anyhow!("no host in {}", self.url))?;
        let tcp = TcpStream::connect(&host)
            .await
            .with_context(|| format!("cannot reach airlock at {host}"))?;
        let _ = tcp.set_nodelay(true);
        let (ws, _) = match tokio_tungstenite::client_async(req, tcp).await {
            Ok(ok) => ok,
            Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
                let body = resp
                    .body()
                    .as_deref()
                    .map(|b| String::from_utf8_lossy(b).into_owned())
                    .unwrap_or_default();
                let detail = airlock_api::Problem::detail_of(&body).unwrap_or(body);
                bail!("{detail} [HTTP {}]", resp.status().as_u16());
            }
            Err(e) => bail!("cannot open the tunnel: {e}"),
        };
        let (mut tx, mut rx) = ws.split();
        let (mut lr, mut lw) = tokio::io::split(local);
        let up = async {
            let mut buf = vec![0u8; CHUNK];
            loop {
                match lr.read(&mut buf).await {
                    Ok(0) | Err(_) => {
                        // End of stream, the tunnel's half-close: answers still come down.
                        let _ = tx.send(Message::Binary(Vec::new().into())).await;
                        return;
                    }
                    Ok(n) => {
                        if tx
                            .send(Message::Binary(buf[..n].to_vec().into()))
                            .await
                            .is_err()
                        {
                            return;
                        }
                    }
                }
            }
        };
        let down = async {
            while let Some(m) = rx.next().await {
                match m {
                    Ok(Message::Binary(b)) => {
                        // Flushed per message: stdout (`--stdio`) is line
                        // buffered, and SSH packets have no newlines.
                        if lw.write_all(&b).await.is_err() || lw.flush().await.is_err() {
                            return "client_closed".to_string();
                        }
                    }
                    Ok(Message::Close(frame)) => {
                        let _ = lw.shutdown().await;
                        return frame
                            .map(|f| f.reason.to_string())
                            .filter(|r| !r.is_empty())
                            .unwrap_or_else(|| "client_closed".into());
                    }
                    Ok(_) => {}
                    Err(_) => break,
                }
            }
            let _ = lw.shutdown().await;
            "error".to_string()
        };
        tokio::pin!(up);
        let mut up_done = false;
        tokio::pin!(down);
        loop {
            tokio::select! {
                _ = &mut up, if !up_done => up_done = true,
                r = &mut down => return Ok(r),
            }
        }
    }
}
