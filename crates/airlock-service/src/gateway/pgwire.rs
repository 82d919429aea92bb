//! The PostgreSQL side of the gateway: it answers the local client's startup
//! itself (the tunnel is already authenticated, so the local leg needs no
//! password), logs in upstream as the grant's role with the grant's password
//! (SCRAM-SHA-256, MD5 or cleartext, as the server asks), then relays bytes
//! unchanged while a [`Tracker`] reads the message stream on the side and
//! turns each simple `Query` and each extended-protocol `Execute` into one
//! query-log entry (statement, parameters, duration, rows, command tag, error).
//!
//! Relaying never waits for a whole message: a chunk read from one side is
//! written to the other as it is, and the framer only copies the bodies it
//! reads (bounded), so a 1 GB `DataRow` costs no more memory than a 1 kB one.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use airlock_providers::gateway::PgLogin;
use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256, SCRAM_SHA_256};
use serde::Serialize;
use time::OffsetDateTime;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

/// Protocol 3.0, the only one spoken (newer minors are negotiated down).
const PROTOCOL_3_0: i32 = 196_608;
const SSL_REQUEST: i32 = 80_877_103;
const GSSENC_REQUEST: i32 = 80_877_104;
const CANCEL_REQUEST: i32 = 80_877_102;
/// Longest startup packet accepted (PostgreSQL's own limit is 10,000).
const MAX_STARTUP: usize = 10_000;
/// Longest upstream authentication message accepted.
const MAX_AUTH_MESSAGE: usize = 64 * 1024;
/// Statement text kept per query-log entry; longer text is cut (and says so).
pub const MAX_STATEMENT: usize = 64 * 1024;
/// Bytes kept per parameter value in the query log.
const MAX_PARAM: usize = 1024;
/// Parameters kept per query-log entry.
const MAX_PARAMS: usize = 100;
/// How long the upstream connect and login may take.
pub const LOGIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Why the gateway could not set a PostgreSQL session up.
#[derive(Debug, thiserror::Error)]
pub enum PgError {
    /// The local client broke the protocol.
    #[error("client: {0}")]
    Client(String),
    /// The upstream server could not be reached or refused the login.
    #[error("upstream: {0}")]
    Upstream(String),
    /// The socket failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// What the local client opened with.
#[derive(Debug)]
pub enum Startup {
    /// A session, with the client's startup parameters.
    Session(Vec<(String, String)>),
    /// A cancel request for a running query (the 16-byte packet, forwarded as is).
    Cancel([u8; 16]),
}

/// Reads the local client's startup: refuses SSL and GSS encryption (the
/// tunnel is encrypted by its own transport), negotiates newer protocol
/// minors down to 3.0, and returns the parameters or a cancel request.
pub async fn accept_startup<S: AsyncRead + AsyncWrite + Unpin>(
    client: &mut S,
) -> Result<Startup, PgError> {
    for _ in 0..4 {
        let len = client.read_i32().await? as usize;
        if !(8..=MAX_STARTUP).contains(&len) {
            return Err(PgError::Client(format!("startup packet of {len} bytes")));
        }
        let mut body = vec![0u8; len - 4];
        client.read_exact(&mut body).await?;
        let code = i32::from_be_bytes([body[0], body[1], body[2], body[3]]);
        match code {
            SSL_REQUEST | GSSENC_REQUEST => {
                client.write_all(b"N").await?;
                client.flush().await?;
                continue;
            }
            CANCEL_REQUEST if len == 16 => {
                let mut packet = [0u8; 16];
                packet[..4].copy_from_slice(&16i32.to_be_bytes());
                packet[4..].copy_from_slice(&body);
                return Ok(Startup::Cancel(packet));
            }
            c if c >> 16 == 3 => {
                let params = parse_startup_params(&body[4..])?;
                let unknown: Vec<&str> = params
                    .iter()
                    .map(|(k, _)| k.as_str())
                    .filter(|k| k.starts_with("_pq_."))
                    .collect();
                if c != PROTOCOL_3_0 || !unknown.is_empty() {
                    client
                        .write_all(&negotiate_protocol_version(&unknown))
                        .await?;
                    client.flush().await?;
                }
                let params = params
                    .into_iter()
                    .filter(|(k, _)| !k.starts_with("_pq_."))
                    .collect();
                return Ok(Startup::Session(params));
            }
            c => {
                return Err(PgError::Client(format!(
                    "unsupported protocol {}.{}",
                    c >> 16,
                    c & 0xffff
                )))
            }
        }
    }
    Err(PgError::Client("too many encryption requests".into()))
}

fn parse_startup_params(mut b: &[u8]) -> Result<Vec<(String, String)>, PgError> {
    let mut out = Vec::new();
    loop {
        let (key, rest) = cstr(b).ok_or_else(|| PgError::Client("bad startup packet".into()))?;
        if key.is_empty() {
            return Ok(out);
        }
        let (value, rest) =
            cstr(rest).ok_or_else(|| PgError::Client("bad startup packet".into()))?;
        out.push((key.to_owned(), value.to_owned()));
        b = rest;
    }
}

/// NegotiateProtocolVersion: 3.0, and the `_pq_` options not understood.
fn negotiate_protocol_version(unknown: &[&str]) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&0i32.to_be_bytes());
    body.extend_from_slice(&(unknown.len() as i32).to_be_bytes());
    for o in unknown {
        body.extend_from_slice(o.as_bytes());
        body.push(0);
    }
    message(b'v', &body)
}

/// A NUL-terminated string at the start of `b`, and what follows it.
fn cstr(b: &[u8]) -> Option<(&str, &[u8])> {
    let end = b.iter().position(|&c| c == 0)?;
    Some((std::str::from_utf8(&b[..end]).ok()?, &b[end + 1..]))
}

/// One backend or frontend message: tag, length, body.
pub fn message(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 5);
    out.push(tag);
    out.extend_from_slice(&((body.len() + 4) as i32).to_be_bytes());
    out.extend_from_slice(body);
    out
}

/// An `ErrorResponse` the gateway itself sends the local client.
pub fn error_response(severity: &str, code: &str, text: &str) -> Vec<u8> {
    let mut body = Vec::new();
    for (field, value) in [
        (b'S', severity),
        (b'V', severity),
        (b'C', code),
        (b'M', text),
    ] {
        body.push(field);
        body.extend_from_slice(value.as_bytes());
        body.push(0);
    }
    body.push(0);
    message(b'E', &body)
}

/// `AuthenticationOk`, sent to the local client once upstream accepted the login.
pub const AUTHENTICATION_OK: [u8; 9] = [b'R', 0, 0, 0, 8, 0, 0, 0, 0];

/// A connection to the target: plain TCP or TLS.
pub trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// The SSLRequest packet (length 8, code 80877103).
const SSL_REQUEST_PACKET: [u8; 8] = [0, 0, 0, 8, 4, 210, 22, 47];

/// Opens a connection to the target, in TLS when the provider says
/// `tls = "require"` (the server certificate verified).
pub async fn open(login: &PgLogin) -> Result<Box<dyn Stream>, PgError> {
    let addr = format!("{}:{}", login.host, login.port);
    let mut tcp = TcpStream::connect(&addr)
        .await
        .map_err(|e| PgError::Upstream(format!("cannot connect to {addr}: {e}")))?;
    tcp.set_nodelay(true)?;
    let Some(tls) = &login.tls else {
        return Ok(Box::new(tcp));
    };
    tcp.write_all(&SSL_REQUEST_PACKET).await?;
    match tcp.read_u8().await? {
        b'S' => {
            let s = airlock_providers::tls::connect(tls.clone(), &login.host, tcp)
                .await
                .map_err(|e| PgError::Upstream(format!("TLS to {addr}: {e}")))?;
            Ok(Box::new(s))
        }
        _ => Err(PgError::Upstream(format!(
            "{addr} does not accept TLS, and the provider says tls = \"require\""
        ))),
    }
}

/// Connects to the target and logs in as the grant. The client's startup
/// parameters are passed on, except `user` (the grant's role is used,
/// whatever the client said) and `replication`.
pub async fn login(
    login: &PgLogin,
    client: &[(String, String)],
) -> Result<Box<dyn Stream>, PgError> {
    let mut up = open(login).await?;
    let mut body = Vec::new();
    body.extend_from_slice(&PROTOCOL_3_0.to_be_bytes());
    let database = client
        .iter()
        .find(|(k, _)| k == "database")
        .map(|(_, v)| v.as_str())
        .filter(|v| !v.is_empty())
        .unwrap_or(&login.database);
    let mut put = |k: &str, v: &str| {
        body.extend_from_slice(k.as_bytes());
        body.push(0);
        body.extend_from_slice(v.as_bytes());
        body.push(0);
    };
    put("user", &login.user);
    put("database", database);
    for (k, v) in client {
        if !matches!(k.as_str(), "user" | "database" | "replication") {
            put(k, v);
        }
    }
    body.push(0);
    let mut startup = Vec::with_capacity(body.len() + 4);
    startup.extend_from_slice(&((body.len() + 4) as i32).to_be_bytes());
    startup.extend_from_slice(&body);
    up.write_all(&startup).await?;

    let mut scram: Option<ScramSha256> = None;
    loop {
        let (tag, body) = read_message(&mut up).await?;
        match tag {
            b'R' => {
                let kind = be_i32(&body, 0)
                    .ok_or_else(|| PgError::Upstream("short authentication message".into()))?;
                match kind {
                    0 => return Ok(up),
                    3 => {
                        let mut p = login.password.as_bytes().to_vec();
                        p.push(0);
                        up.write_all(&message(b'p', &p)).await?;
                    }
                    5 => {
                        let salt: [u8; 4] = body
                            .get(4..8)
                            .and_then(|s| s.try_into().ok())
                            .ok_or_else(|| PgError::Upstream("short MD5 salt".into()))?;
                        let hash = postgres_protocol::authentication::md5_hash(
                            login.user.as_bytes(),
                            login.password.as_bytes(),
                            salt,
                        );
                        let mut p = hash.into_bytes();
                        p.push(0);
                        up.write_all(&message(b'p', &p)).await?;
                    }
                    10 => {
                        let offers_scram = body[4..]
                            .split(|&b| b == 0)
                            .any(|m| m == SCRAM_SHA_256.as_bytes());
                        if !offers_scram {
                            return Err(PgError::Upstream(
                                "the server offers no SASL mechanism the gateway speaks (SCRAM-SHA-256)"
                                    .into(),
                            ));
                        }
                        let s = ScramSha256::new(
                            login.password.as_bytes(),
                            ChannelBinding::unsupported(),
                        );
                        let first = s.message().to_vec();
                        let mut p = Vec::new();
                        p.extend_from_slice(SCRAM_SHA_256.as_bytes());
                        p.push(0);
                        p.extend_from_slice(&(first.len() as i32).to_be_bytes());
                        p.extend_from_slice(&first);
                        up.write_all(&message(b'p', &p)).await?;
                        scram = Some(s);
                    }
                    11 => {
                        let s = scram
                            .as_mut()
                            .ok_or_else(|| PgError::Upstream("SASL continue before start".into()))?;
                        s.update(&body[4..])
                            .map_err(|e| PgError::Upstream(format!("SCRAM: {e}")))?;
                        let next = s.message().to_vec();
                        up.write_all(&message(b'p', &next)).await?;
                    }
                    12 => {
                        let mut s = scram
                            .take()
                            .ok_or_else(|| PgError::Upstream("SASL final before start".into()))?;
                        s.finish(&body[4..]).map_err(|e| {
                            PgError::Upstream(format!("SCRAM: the server's proof is wrong: {e}"))
                        })?;
                    }
                    other => {
                        return Err(PgError::Upstream(format!(
                            "the server asks for authentication method {other}, which the gateway does not speak"
                        )))
                    }
                }
            }
            b'E' => {
                let fields = error_fields(&body);
                return Err(PgError::Upstream(format!(
                    "login as {} refused: {}",
                    login.user,
                    fields.message.unwrap_or_default()
                )));
            }
            b'N' => continue,
            other => {
                return Err(PgError::Upstream(format!(
                    "unexpected message `{}` during login",
                    other as char
                )))
            }
        }
    }
}

async fn read_message<S: AsyncRead + Unpin>(s: &mut S) -> Result<(u8, Vec<u8>), PgError> {
    let tag = s.read_u8().await?;
    let len = s.read_i32().await? as usize;
    if !(4..=MAX_AUTH_MESSAGE).contains(&len) {
        return Err(PgError::Upstream(format!(
            "message `{}` of {len} bytes during login",
            tag as char
        )));
    }
    let mut body = vec![0u8; len - 4];
    s.read_exact(&mut body).await?;
    Ok((tag, body))
}

fn be_i32(b: &[u8], at: usize) -> Option<i32> {
    Some(i32::from_be_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn be_i16(b: &[u8], at: usize) -> Option<i16> {
    Some(i16::from_be_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

/// The fields of an `ErrorResponse` the query log keeps.
#[derive(Debug, Default)]
struct ErrorFields {
    code: Option<String>,
    message: Option<String>,
}

fn error_fields(body: &[u8]) -> ErrorFields {
    let mut out = ErrorFields::default();
    for field in body.split(|&b| b == 0) {
        let Some((&kind, value)) = field.split_first() else {
            continue;
        };
        let value = String::from_utf8_lossy(value).into_owned();
        match kind {
            b'C' => out.code = Some(value),
            b'M' => out.message = Some(value),
            _ => {}
        }
    }
    out
}

/// One query-log entry (a line of `airlock session events`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct QueryEvent {
    /// When the statement was sent (RFC 3339).
    pub at: String,
    /// Always `query`.
    pub kind: &'static str,
    pub statement: String,
    /// Bind parameters in text (binary ones as `\x` hex), `null` for NULL.
    pub params: Vec<Option<String>>,
    pub duration_ms: f64,
    /// Rows returned or affected.
    pub rows: u64,
    /// The command tag (`SELECT 1`, `INSERT 0 5`), empty for an empty query.
    pub tag: Option<String>,
    /// `SQLSTATE: message` when it failed.
    pub error: Option<String>,
}

/// A statement on its way: what the log entry will say once the server answers.
#[derive(Debug)]
struct Open {
    at: OffsetDateTime,
    started: Instant,
    statement: String,
    params: Vec<Option<String>>,
    rows: u64,
    tag: Option<String>,
    error: Option<String>,
}

impl Open {
    fn new(now: OffsetDateTime, statement: String, params: Vec<Option<String>>) -> Open {
        Open {
            at: now,
            started: Instant::now(),
            statement,
            params,
            rows: 0,
            tag: None,
            error: None,
        }
    }

    fn finish(self) -> QueryEvent {
        QueryEvent {
            at: crate::lifecycle::fmt_time(self.at),
            kind: "query",
            statement: self.statement,
            params: self.params,
            duration_ms: (self.started.elapsed().as_secs_f64() * 1e6).round() / 1e3,
            rows: self.rows,
            tag: self.tag,
            error: self.error,
        }
    }
}

/// What the server's next answers belong to, in the order the client sent them.
#[derive(Debug)]
enum Pending {
    /// A simple query: answers until `ReadyForQuery`.
    Query(Open),
    /// An extended-protocol `Execute`: answers until `CommandComplete`,
    /// `EmptyQueryResponse`, `PortalSuspended` or an error.
    Execute(Open),
    /// `Sync`: answered by `ReadyForQuery`.
    Sync,
}

/// Reads both directions of one PostgreSQL session and produces its query log.
#[derive(Debug, Default)]
pub struct Tracker {
    /// Prepared statement name → text (`""` is the unnamed one).
    statements: HashMap<String, String>,
    /// Portal name → (statement text, parameters).
    portals: HashMap<String, (String, Vec<Option<String>>)>,
    pending: VecDeque<Pending>,
    /// The last `Parse` text, for an error answering a `Parse` with no `Execute` queued.
    last_parse: Option<String>,
    /// The server skips to the next `Sync` after an error in the extended protocol.
    failed_until_sync: bool,
    /// Finished entries, drained by the caller.
    done: Vec<QueryEvent>,
}

impl Tracker {
    /// Finished log entries since the last call.
    pub fn drain(&mut self) -> std::vec::Drain<'_, QueryEvent> {
        self.done.drain(..)
    }

    /// The session ended: statements still running are logged as cut.
    pub fn cut(&mut self, reason: &str) {
        for p in self.pending.drain(..) {
            if let Pending::Query(mut o) | Pending::Execute(mut o) = p {
                o.error = Some(format!("57P01: airlock: session ended ({reason})"));
                self.done.push(o.finish());
            }
        }
    }

    /// A message from the client (`body` cut at the framer's limit).
    pub fn client(&mut self, tag: u8, body: &[u8], now: OffsetDateTime) {
        match tag {
            b'Q' => {
                let text = text_of(body);
                self.pending
                    .push_back(Pending::Query(Open::new(now, text, Vec::new())));
            }
            b'P' => {
                if let Some((name, rest)) = cstr_lossy(body) {
                    let text = cstr_lossy(rest).map(|(t, _)| t).unwrap_or_default();
                    self.last_parse = Some(text.clone());
                    self.statements.insert(name, text);
                }
            }
            b'B' => {
                if let Some((portal, statement, params)) = parse_bind(body) {
                    let text = self.statements.get(&statement).cloned().unwrap_or_default();
                    self.portals.insert(portal, (text, params));
                }
            }
            b'E' => {
                let portal = cstr_lossy(body).map(|(p, _)| p).unwrap_or_default();
                let (text, params) = self.portals.get(&portal).cloned().unwrap_or_default();
                self.pending
                    .push_back(Pending::Execute(Open::new(now, text, params)));
            }
            b'S' => self.pending.push_back(Pending::Sync),
            b'C' => {
                // Close: forget a statement or portal.
                if let (Some(&kind), Some((name, _))) =
                    (body.first(), cstr_lossy(&body[1.min(body.len())..]))
                {
                    match kind {
                        b'S' => {
                            self.statements.remove(&name);
                        }
                        b'P' => {
                            self.portals.remove(&name);
                        }
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }

    /// A message from the server.
    pub fn server(&mut self, tag: u8, body: &[u8]) {
        match tag {
            b'D' => {
                if let Some(Pending::Query(o) | Pending::Execute(o)) = self.pending.front_mut() {
                    o.rows += 1;
                }
            }
            b'C' | b'I' | b's' => {
                let command =
                    (tag == b'C').then(|| cstr_lossy(body).map(|(t, _)| t).unwrap_or_default());
                match self.pending.front_mut() {
                    Some(Pending::Query(o)) => {
                        if let Some(c) = &command {
                            o.rows = rows_of(c).unwrap_or(o.rows);
                        }
                        o.tag = command.or(Some(String::new()));
                    }
                    Some(Pending::Execute(_)) => {
                        if let Some(Pending::Execute(mut o)) = self.pending.pop_front() {
                            if let Some(c) = &command {
                                o.rows = rows_of(c).unwrap_or(o.rows);
                            }
                            o.tag = command.or(Some(String::new()));
                            self.done.push(o.finish());
                        }
                    }
                    _ => {}
                }
            }
            b'E' => {
                let f = error_fields(body);
                let error = format!(
                    "{}: {}",
                    f.code.unwrap_or_default(),
                    f.message.unwrap_or_default()
                );
                match self.pending.front_mut() {
                    Some(Pending::Query(o)) => o.error = Some(error),
                    Some(Pending::Execute(_)) => {
                        if let Some(Pending::Execute(mut o)) = self.pending.pop_front() {
                            o.error = Some(error);
                            self.done.push(o.finish());
                        }
                        self.failed_until_sync = true;
                    }
                    Some(Pending::Sync) | None => {
                        // A Parse or Bind failed with no Execute queued.
                        let mut o = Open::new(
                            OffsetDateTime::now_utc(),
                            self.last_parse.clone().unwrap_or_default(),
                            Vec::new(),
                        );
                        o.error = Some(error);
                        self.done.push(o.finish());
                        self.failed_until_sync = true;
                    }
                }
                if self.failed_until_sync {
                    // The server skips every Execute up to the next Sync.
                    while let Some(Pending::Execute(_)) = self.pending.front() {
                        self.pending.pop_front();
                    }
                }
            }
            b'Z' => {
                self.failed_until_sync = false;
                while let Some(p) = self.pending.pop_front() {
                    match p {
                        Pending::Sync => break,
                        Pending::Query(o) => {
                            self.done.push(o.finish());
                            break;
                        }
                        // An Execute answered by nothing (never happens with a
                        // well-behaved server): log what is known.
                        Pending::Execute(o) => self.done.push(o.finish()),
                    }
                }
            }
            _ => {}
        }
    }
}

/// Rows affected, from a command tag's last number (`INSERT 0 5` → 5).
fn rows_of(tag: &str) -> Option<u64> {
    tag.rsplit(' ').next()?.parse().ok()
}

fn text_of(body: &[u8]) -> String {
    let end = body.iter().position(|&b| b == 0).unwrap_or(body.len());
    let mut s = String::from_utf8_lossy(&body[..end]).into_owned();
    if end == body.len() && body.len() >= MAX_STATEMENT {
        s.push_str(" …(cut)");
    }
    s
}

fn cstr_lossy(b: &[u8]) -> Option<(String, &[u8])> {
    let end = b.iter().position(|&c| c == 0)?;
    Some((
        String::from_utf8_lossy(&b[..end]).into_owned(),
        &b[end + 1..],
    ))
}

/// Bind: portal, statement, parameter formats, values.
fn parse_bind(body: &[u8]) -> Option<(String, String, Vec<Option<String>>)> {
    let (portal, rest) = cstr_lossy(body)?;
    let (statement, rest) = cstr_lossy(rest)?;
    let nfmt = be_i16(rest, 0)? as usize;
    let fmts: Vec<i16> = (0..nfmt).filter_map(|i| be_i16(rest, 2 + 2 * i)).collect();
    let mut at = 2 + 2 * nfmt;
    let n = be_i16(rest, at)? as usize;
    at += 2;
    let mut params = Vec::new();
    for i in 0..n.min(MAX_PARAMS) {
        let Some(len) = be_i32(rest, at) else { break };
        at += 4;
        if len < 0 {
            params.push(None);
            continue;
        }
        let len = len as usize;
        let value = &rest[at.min(rest.len())..(at + len).min(rest.len())];
        at += len;
        let binary = match fmts.len() {
            0 => false,
            1 => fmts[0] == 1,
            _ => fmts.get(i) == Some(&1),
        };
        let cut = &value[..value.len().min(MAX_PARAM)];
        let mut shown = if binary {
            format!("\\x{}", hex::encode(cut))
        } else {
            String::from_utf8_lossy(cut).into_owned()
        };
        if value.len() > MAX_PARAM || value.len() < len {
            shown.push_str("…(cut)");
        }
        params.push(Some(shown));
    }
    Some((portal, statement, params))
}

/// Splits a byte stream into messages without holding them: each call hands
/// over the next chunk; complete messages' tags and (bounded) bodies go to `on`.
#[derive(Debug)]
pub struct Framer {
    header: [u8; 5],
    have: usize,
    tag: u8,
    remaining: usize,
    body: Vec<u8>,
    /// Tags whose body is copied (others are only counted).
    keep: &'static [u8],
}

impl Framer {
    /// A framer copying the bodies of `keep` (up to [`MAX_STATEMENT`] bytes each).
    pub fn new(keep: &'static [u8]) -> Framer {
        Framer {
            header: [0; 5],
            have: 0,
            tag: 0,
            remaining: 0,
            body: Vec::new(),
            keep,
        }
    }

    /// Feeds a chunk; `on(tag, body)` runs for every message completed in it.
    /// Fails on a length no PostgreSQL peer sends.
    pub fn feed(&mut self, mut data: &[u8], mut on: impl FnMut(u8, &[u8])) -> Result<(), String> {
        while !data.is_empty() {
            if self.have < 5 {
                let take = (5 - self.have).min(data.len());
                self.header[self.have..self.have + take].copy_from_slice(&data[..take]);
                self.have += take;
                data = &data[take..];
                if self.have < 5 {
                    return Ok(());
                }
                self.tag = self.header[0];
                let len = i32::from_be_bytes([
                    self.header[1],
                    self.header[2],
                    self.header[3],
                    self.header[4],
                ]);
                if len < 4 {
                    return Err(format!("message `{}` with length {len}", self.tag as char));
                }
                self.remaining = len as usize - 4;
                self.body.clear();
            }
            let take = self.remaining.min(data.len());
            if self.keep.contains(&self.tag) {
                let room = MAX_STATEMENT.saturating_sub(self.body.len());
                self.body.extend_from_slice(&data[..take.min(room)]);
            }
            self.remaining -= take;
            data = &data[take..];
            if self.remaining == 0 {
                on(self.tag, &self.body);
                self.have = 0;
            }
        }
        Ok(())
    }
}

/// Message tags whose bodies the tracker reads, from the client.
pub const CLIENT_KEEP: &[u8] = b"QPBEC";
/// Message tags whose bodies the tracker reads, from the server.
pub const SERVER_KEEP: &[u8] = b"CE";

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> OffsetDateTime {
        time::macros::datetime!(2030-01-01 00:00 UTC)
    }

    fn cs(s: &str) -> Vec<u8> {
        let mut v = s.as_bytes().to_vec();
        v.push(0);
        v
    }

    fn complete(tag: &str) -> Vec<u8> {
        cs(tag)
    }

    #[test]
    fn simple_query_logs_tag_rows_and_errors() {
        let mut t = Tracker::default();
        t.client(b'Q', &cs("select 1; select 2"), now());
        t.server(b'T', b"");
        t.server(b'D', b"");
        t.server(b'C', &complete("SELECT 1"));
        t.server(b'D', b"");
        t.server(b'C', &complete("SELECT 1"));
        t.server(b'Z', b"I");
        t.client(b'Q', &cs("update t set x = 1"), now());
        t.server(b'C', &complete("UPDATE 7"));
        t.server(b'Z', b"I");
        t.client(b'Q', &cs("selec"), now());
        let mut err = vec![b'S'];
        err.extend(cs("ERROR"));
        err.push(b'C');
        err.extend(cs("42601"));
        err.push(b'M');
        err.extend(cs("syntax error at or near \"selec\""));
        err.push(0);
        t.server(b'E', &err);
        t.server(b'Z', b"I");
        let got: Vec<QueryEvent> = t.drain().collect();
        assert_eq!(got.len(), 3);
        assert_eq!(got[0].statement, "select 1; select 2");
        assert_eq!(got[0].tag.as_deref(), Some("SELECT 1"));
        assert_eq!(got[1].rows, 7);
        assert_eq!(got[1].tag.as_deref(), Some("UPDATE 7"));
        assert_eq!(
            got[2].error.as_deref(),
            Some("42601: syntax error at or near \"selec\"")
        );
        assert_eq!(got[2].tag, None);
    }

    fn bind(portal: &str, statement: &str, formats: &[i16], params: &[Option<&[u8]>]) -> Vec<u8> {
        let mut b = cs(portal);
        b.extend(cs(statement));
        b.extend((formats.len() as i16).to_be_bytes());
        for f in formats {
            b.extend(f.to_be_bytes());
        }
        b.extend((params.len() as i16).to_be_bytes());
        for p in params {
            match p {
                None => b.extend((-1i32).to_be_bytes()),
                Some(v) => {
                    b.extend((v.len() as i32).to_be_bytes());
                    b.extend_from_slice(v);
                }
            }
        }
        b.extend(0i16.to_be_bytes());
        b
    }

    #[test]
    fn extended_protocol_logs_each_execute_with_its_parameters() {
        let mut t = Tracker::default();
        let mut parse = cs("s1");
        parse.extend(cs("select $1::int, $2::text, $3"));
        parse.extend(0i16.to_be_bytes());
        t.client(b'P', &parse, now());
        for v in ["41", "42"] {
            t.client(
                b'B',
                &bind(
                    "",
                    "s1",
                    &[0, 0, 1],
                    &[Some(v.as_bytes()), None, Some(&[0xde, 0xad])],
                ),
                now(),
            );
            t.client(b'E', &[0, 0, 0, 0, 0], now());
        }
        t.client(b'S', b"", now());
        t.server(b'1', b"");
        for _ in 0..2 {
            t.server(b'2', b"");
            t.server(b'D', b"");
            t.server(b'C', &complete("SELECT 1"));
        }
        t.server(b'Z', b"I");
        let got: Vec<QueryEvent> = t.drain().collect();
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].statement, "select $1::int, $2::text, $3");
        assert_eq!(
            got[0].params,
            vec![Some("41".to_string()), None, Some("\\xdead".to_string())]
        );
        assert_eq!(got[1].params[0].as_deref(), Some("42"));
        assert_eq!(got[1].rows, 1);
    }

    #[test]
    fn an_error_skips_the_executes_queued_before_sync() {
        let mut t = Tracker::default();
        let mut parse = cs("");
        parse.extend(cs("select nope"));
        parse.extend(0i16.to_be_bytes());
        t.client(b'P', &parse, now());
        t.client(b'B', &bind("", "", &[], &[]), now());
        t.client(b'E', &[0, 0, 0, 0, 0], now());
        t.client(b'E', &[0, 0, 0, 0, 0], now());
        t.client(b'S', b"", now());
        let mut err = vec![b'C'];
        err.extend(cs("42703"));
        err.push(0);
        t.server(b'E', &err);
        t.server(b'Z', b"I");
        // A prepare alone (pgbench -M prepared) that fails is logged too.
        t.client(b'P', &parse, now());
        t.client(b'S', b"", now());
        t.server(b'E', &err);
        t.server(b'Z', b"I");
        let got: Vec<QueryEvent> = t.drain().collect();
        assert_eq!(got.len(), 2, "{got:?}");
        assert!(got.iter().all(|e| e.statement == "select nope"));
        assert!(got.iter().all(|e| e.error.as_deref() == Some("42703: ")));
        assert!(t.pending.is_empty());
    }

    #[test]
    fn framer_reassembles_messages_split_anywhere_and_bounds_bodies() {
        let mut stream = message(b'Q', &cs("select 1"));
        stream.extend(message(b'D', &vec![7u8; 100_000]));
        stream.extend(message(b'Q', &vec![b'x'; MAX_STATEMENT + 10]));
        for chunk in [1, 3, 4, 5, 7, 4096, stream.len()] {
            let mut f = Framer::new(b"Q");
            let mut seen = Vec::new();
            for piece in stream.chunks(chunk) {
                f.feed(piece, |tag, body| seen.push((tag, body.len())))
                    .expect("valid stream");
            }
            assert_eq!(
                seen,
                vec![(b'Q', 9), (b'D', 0), (b'Q', MAX_STATEMENT)],
                "chunk size {chunk}"
            );
        }
        let mut f = Framer::new(b"");
        assert!(f.feed(&[b'Q', 0, 0, 0, 1], |_, _| {}).is_err());
    }

    #[tokio::test]
    async fn startup_refuses_ssl_and_reads_parameters() {
        let (mut a, mut b) = tokio::io::duplex(4096);
        let client = tokio::spawn(async move {
            a.write_all(&[0, 0, 0, 8, 4, 210, 22, 47])
                .await
                .expect("write");
            let mut n = [0u8; 1];
            a.read_exact(&mut n).await.expect("read");
            assert_eq!(&n, b"N");
            let mut body = PROTOCOL_3_0.to_be_bytes().to_vec();
            for s in ["user", "mallory", "database", "payments", ""] {
                body.extend(cs(s));
            }
            let mut packet = ((body.len() + 4) as i32).to_be_bytes().to_vec();
            packet.extend(body);
            a.write_all(&packet).await.expect("write");
        });
        match accept_startup(&mut b).await.expect("startup") {
            Startup::Session(p) => assert_eq!(
                p,
                vec![
                    ("user".to_string(), "mallory".to_string()),
                    ("database".to_string(), "payments".to_string())
                ]
            ),
            other => panic!("{other:?}"),
        }
        client.await.expect("client");
    }
}
