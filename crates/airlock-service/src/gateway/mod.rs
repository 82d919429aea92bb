//! The gateway: `airlock connect` tunnels one connection at a time through
//! the server to a grant's target. The server holds the credential (the
//! person never does), records what is done (PostgreSQL: every statement),
//! and cuts the session when the grant ends, is revoked or locked, or a
//! reviewer terminates it, whichever replica decided it.
//!
//! Sessions live in the store, so every replica can list and end them: the
//! holder renews a lease and polls for its sessions' grant state and
//! termination requests every [`WATCH_EVERY`]; a session whose holder died
//! is ended as `error` once its lease runs out.

pub mod cast;
pub mod pgwire;
mod recorder;
mod ssh;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use airlock_api::sessions::{GatewayInfo, SessionView};
use airlock_core::audit_chain::AuditDraft;
use airlock_core::request::{Request, RequestId, RequestState};
use airlock_core::session::{EndReason, Session, SessionId, SessionKind, SESSION_ID_PREFIX};
use airlock_core::{EntitlementName, Error, Principal, UserName};
use airlock_providers::gateway::{PgLogin, SshLogin, Upstream};
use airlock_store::{LockKind, SessionEnd, SessionFilter};
use rand::Rng;
use serde_json::json;
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::lifecycle::fmt_time;
use crate::{Service, ServiceError};
use recorder::Recorder;

/// How often the holder checks its sessions' grants, locks and termination requests.
pub const WATCH_EVERY: Duration = Duration::from_millis(250);
/// How long a session's lease lasts without renewal: a replica that dies
/// leaves its sessions open in the store at most this long (plus a sweep).
pub const LEASE: Duration = Duration::from_secs(10);
/// How often the holder renews its leases.
pub const RENEW_EVERY: Duration = Duration::from_secs(3);
/// How often a replica looks for sessions whose holder died.
pub const SWEEP_EVERY: Duration = Duration::from_secs(3);
/// Relay buffer per direction.
const BUFFER: usize = 64 * 1024;

/// The sessions this replica holds, each with the switch that cuts it.
#[derive(Default)]
pub struct Hub {
    live: std::sync::Mutex<HashMap<SessionId, Live>>,
}

struct Live {
    request_id: RequestId,
    user: UserName,
    entitlement: EntitlementName,
    cut: tokio::sync::watch::Sender<Option<EndReason>>,
}

impl Hub {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<SessionId, Live>> {
        self.live.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// How many sessions this replica holds.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether this replica holds no session.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Ends a held session (the first reason wins).
    fn cut(&self, id: &SessionId, reason: EndReason) {
        if let Some(l) = self.lock().get(id) {
            l.cut.send_if_modified(|r| {
                let first = r.is_none();
                if first {
                    *r = Some(reason);
                }
                first
            });
        }
    }

    /// Ends every held session (the replica drains).
    fn cut_all(&self, reason: EndReason) {
        let ids: Vec<SessionId> = self.lock().keys().cloned().collect();
        for id in ids {
            self.cut(&id, reason);
        }
    }
}

/// A new session id: `ses_` and 16 characters of lowercase base32.
pub fn new_session_id() -> SessionId {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz234567";
    let mut rng = rand::thread_rng();
    let s: String = (0..16)
        .map(|_| ALPHABET[rng.gen_range(0..32)] as char)
        .collect();
    SessionId::parse(&format!("{SESSION_ID_PREFIX}{s}")).expect("generated ids are valid")
}

/// The audit subject of a session.
pub fn subject(id: &SessionId) -> String {
    format!("session:{id}")
}

/// Where a session goes.
#[derive(Debug, Clone)]
enum Target {
    Postgres(PgLogin),
    Ssh(SshLogin),
    Tcp(String),
}

impl Target {
    /// Where the session goes, for the audit event.
    fn address(&self) -> String {
        match self {
            Target::Postgres(l) => format!("{}:{}", l.host, l.port),
            Target::Ssh(l) => format!("{}:{}", l.host, l.port),
            Target::Tcp(t) => t.clone(),
        }
    }
}

/// An authorized connection, not yet opened.
#[derive(Debug, Clone)]
pub struct Plan {
    request: Request,
    kind: SessionKind,
    target: Target,
    not_after: OffsetDateTime,
}

impl Plan {
    /// What the client needs to know (no secret in it).
    pub fn info(&self) -> GatewayInfo {
        GatewayInfo {
            request_id: self.request.id.to_string(),
            entitlement: self.request.entitlement.to_string(),
            kind: self.kind.as_str().into(),
            database: match &self.target {
                Target::Postgres(l) => Some(l.database.clone()),
                Target::Ssh(_) | Target::Tcp(_) => None,
            },
            not_after: fmt_time(self.not_after),
        }
    }
}

/// Checks that `who` may tunnel to request `id`'s grant now: only its
/// requester, only while it is active and neither they nor the entitlement
/// is locked, only for entitlements with `access = "gateway"` or `"both"`.
pub async fn authorize(
    app: &Arc<Service>,
    who: &Principal,
    id: RequestId,
) -> Result<Plan, ServiceError> {
    let lookup = id.clone();
    let r = app
        .db_untracked(move |s| s.get_request(&lookup))
        .await?
        .filter(|r| crate::visibility::may_read_request(app, who, r))
        .ok_or_else(|| crate::visibility::hidden(format!("request `{id}`")))?;
    if r.requester != who.name {
        return Err(
            Error::forbidden("only the requester of a grant may connect through it").into(),
        );
    }
    let ent = crate::lifecycle::entitlement_of(app, &r)?;
    if !ent.access.allows_gateway() {
        return Err(Error::forbidden(format!(
            "entitlement {} is not used through the gateway (its access is \"credentials\"): use `airlock credentials {}`",
            ent.name, r.id
        ))
        .into());
    }
    if r.state != RequestState::Active {
        return Err(Error::Conflict {
            current_state: r.state.to_string(),
            message: "a gateway session needs an active grant".into(),
        }
        .into());
    }
    crate::locks::check_request(app, &r.requester, &r.entitlement).await?;
    let spec = crate::lifecycle::grant_spec(app, &r)?;
    let (kind, target) = match &ent.gateway_target {
        Some(t) => (SessionKind::Tcp, Target::Tcp(t.clone())),
        None => match app
            .provider(&ent.provider)?
            .gateway_login(&spec)
            .map_err(|e| Error::forbidden(format!("the gateway cannot log in for this grant: {e}")))?
        {
            Some(Upstream::Postgres(login)) => (SessionKind::Postgres, Target::Postgres(login)),
            Some(Upstream::Ssh(login)) => (SessionKind::Ssh, Target::Ssh(login)),
            None => {
                return Err(ServiceError::internal(format!(
                    "provider {} has no gateway login and entitlement {} no `target` (the configuration check should have refused this)",
                    ent.provider, ent.name
                )))
            }
        },
    };
    Ok(Plan {
        not_after: spec.not_after,
        request: r,
        kind,
        target,
    })
}

/// Byte counters of a session, readable after the relay was dropped.
#[derive(Default)]
struct Counters {
    up: AtomicU64,
    down: AtomicU64,
    /// The client said goodbye (PostgreSQL `Terminate`) before the target closed.
    client_done: AtomicBool,
}

/// Runs one session over `client` (the tunnel's bytes) until either side
/// closes or the grant ends; records it and returns why it ended.
pub async fn run<S>(app: Arc<Service>, plan: Plan, mut client: S) -> EndReason
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    // A cancel request is forwarded, not a session: it carries the key the
    // target gave this grant's own session.
    let startup = match &plan.target {
        Target::Postgres(login) => match pgwire::accept_startup(&mut client).await {
            Ok(pgwire::Startup::Session(params)) => Some(params),
            Ok(pgwire::Startup::Cancel(packet)) => {
                forward_cancel(login, &packet).await;
                return EndReason::ClientClosed;
            }
            Err(e) => {
                tracing::info!(request = %plan.request.id, error = %e, "gateway: bad startup from the client");
                return EndReason::Error;
            }
        },
        Target::Ssh(_) | Target::Tcp(_) => None,
    };
    let now = app.now();
    let session = Session {
        id: new_session_id(),
        request_id: plan.request.id.clone(),
        entitlement: plan.request.entitlement.clone(),
        user: plan.request.requester.clone(),
        kind: plan.kind,
        replica: app.replica_id.clone(),
        started_at: now,
        ended_at: None,
        bytes_up: 0,
        bytes_down: 0,
        end_reason: None,
        recording_sha256: None,
        terminate_requested: None,
        lease_until: now + LEASE,
    };
    let started = AuditDraft::new(
        "session.started",
        session.user.as_str(),
        subject(&session.id),
        json!({
            "request": session.request_id,
            "entitlement": session.entitlement,
            "kind": session.kind.as_str(),
            "replica": session.replica,
            "target": plan.target.address(),
        }),
    );
    let record = session.clone();
    if let Err(e) = app
        .db(move |s| s.start_session(&record, &started, now))
        .await
    {
        tracing::warn!(request = %plan.request.id, error = %e, "gateway: cannot record the session; refusing it");
        if startup.is_some() {
            let _ = send(
                &mut client,
                &pgwire::error_response(
                    "FATAL",
                    "57P03",
                    "airlock: the gateway cannot record this session now; try again shortly",
                ),
            )
            .await;
        }
        return EndReason::Error;
    }
    let (cut_tx, mut cut_rx) = tokio::sync::watch::channel(None);
    app.gateway.lock().insert(
        session.id.clone(),
        Live {
            request_id: session.request_id.clone(),
            user: session.user.clone(),
            entitlement: session.entitlement.clone(),
            cut: cut_tx,
        },
    );
    tracing::info!(session = %session.id, request = %session.request_id, kind = session.kind.as_str(), "gateway session started");

    let counters = Counters::default();
    let recorder = Recorder::start(app.clone(), session.id.clone());
    let deadline = deadline_of(plan.not_after, app.now());
    let stop = async {
        tokio::select! {
            _ = tokio::time::sleep_until(deadline) => EndReason::NotAfter,
            r = cut_rx.wait_for(Option::is_some) => r.ok().and_then(|r| *r).unwrap_or(EndReason::Error),
            _ = app.stopped() => EndReason::Error,
        }
    };
    let (reason, detail) = match (&plan.target, startup) {
        (Target::Postgres(login), Some(params)) => {
            postgres(&app, login, &params, client, &counters, &recorder, stop).await
        }
        (Target::Ssh(login), _) => {
            ssh::relay(&app, login, client, &counters, &recorder, stop, cut_message).await
        }
        (Target::Tcp(addr), _) => tcp(addr, client, &counters, stop).await,
        (Target::Postgres(_), None) => (EndReason::Error, Some("no startup".into())),
    };
    // The provider ends the role's backends when a grant ends, so the target
    // may close before the watch loop sees why: the grant's state says.
    let reason = match reason {
        EndReason::TargetClosed => grant_end(&app, &session).await.unwrap_or(reason),
        // The client's own timer may beat ours by a hair.
        EndReason::ClientClosed if app.now() >= plan.not_after => EndReason::NotAfter,
        r => r,
    };
    let sha = recorder.finish().await;
    let end = SessionEnd {
        reason,
        bytes_up: counters.up.load(Ordering::Relaxed),
        bytes_down: counters.down.load(Ordering::Relaxed),
        recording_sha256: sha,
    };
    end_session(&app, &session, end, detail).await;
    app.gateway.lock().remove(&session.id);
    reason
}

/// Why the grant of `s` ended, if it did (a lock, revoke or expiry).
async fn grant_end(app: &Arc<Service>, s: &Session) -> Option<EndReason> {
    let ids = vec![s.id.to_string()];
    let seen = app
        .db_untracked(move |st| st.watch_sessions(&ids, None))
        .await
        .ok()?;
    let state = seen.first()?.request_state;
    match state {
        RequestState::Active => None,
        RequestState::Expired => Some(EndReason::NotAfter),
        _ => {
            app.locks.invalidate().await;
            let locks = crate::locks::in_force(app).await.ok()?;
            Some(if is_locked(&locks, &s.user, &s.entitlement) {
                EndReason::Locked
            } else {
                EndReason::Revoked
            })
        }
    }
}

/// Whether a lock holds the user or the entitlement.
fn is_locked(locks: &[airlock_store::Lock], user: &UserName, ent: &EntitlementName) -> bool {
    locks.iter().any(|l| {
        (l.kind == LockKind::User && l.name == user.as_str())
            || (l.kind == LockKind::Entitlement && l.name == ent.as_str())
    })
}

/// The tokio instant of `not_after` (now when it is past).
fn deadline_of(not_after: OffsetDateTime, now: OffsetDateTime) -> tokio::time::Instant {
    let left = (not_after - now).max(time::Duration::ZERO);
    tokio::time::Instant::now() + Duration::try_from(left).unwrap_or_default()
}

/// Records the end of a session with its `session.ended` event.
async fn end_session(app: &Arc<Service>, s: &Session, end: SessionEnd, detail: Option<String>) {
    let now = app.now();
    let audit = AuditDraft::new(
        "session.ended",
        "system",
        subject(&s.id),
        json!({
            "request": s.request_id,
            "end_reason": end.reason.as_str(),
            "bytes_up": end.bytes_up,
            "bytes_down": end.bytes_down,
            "recording_sha256": end.recording_sha256,
            "detail": detail,
        }),
    );
    let id = s.id.clone();
    tracing::info!(session = %s.id, reason = end.reason.as_str(), bytes_up = end.bytes_up, bytes_down = end.bytes_down, "gateway session ended");
    if let Err(e) = app
        .db(move |st| st.end_session(&id, &end, &audit, now))
        .await
    {
        // The lease runs out and a sweep ends it as `error` later.
        tracing::warn!(session = %s.id, error = %e, "gateway: cannot record the end of the session");
    }
}

/// What the person sees when the gateway cuts a session.
fn cut_message(reason: EndReason) -> String {
    let why = match reason {
        EndReason::NotAfter => "the grant ended (not_after)",
        EndReason::Revoked => "the grant was revoked",
        EndReason::Locked => "the user or the entitlement was locked",
        EndReason::Terminated => "a reviewer terminated this session",
        _ => "the gateway is restarting",
    };
    format!("airlock: {why}; this session is closed")
}

async fn postgres<S, F>(
    app: &Arc<Service>,
    login: &PgLogin,
    params: &[(String, String)],
    client: S,
    counters: &Counters,
    recorder: &Recorder,
    stop: F,
) -> (EndReason, Option<String>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
    F: std::future::Future<Output = EndReason>,
{
    let (mut cr, mut cw) = tokio::io::split(client);
    let upstream =
        match tokio::time::timeout(pgwire::LOGIN_TIMEOUT, pgwire::login(login, params)).await {
            Ok(Ok(up)) => up,
            Ok(Err(e)) => {
                let _ = send(
                    &mut cw,
                    &pgwire::error_response("FATAL", "08006", &format!("airlock gateway: {e}")),
                )
                .await;
                return (EndReason::Error, Some(e.to_string()));
            }
            Err(_) => {
                let _ = send(
                    &mut cw,
                    &pgwire::error_response(
                        "FATAL",
                        "08006",
                        "airlock gateway: the database did not answer in time",
                    ),
                )
                .await;
                return (EndReason::Error, Some("upstream login timed out".into()));
            }
        };
    if send(&mut cw, &pgwire::AUTHENTICATION_OK).await.is_err() {
        return (EndReason::ClientClosed, None);
    }
    let (mut ur, mut uw) = tokio::io::split(upstream);
    let tracker = std::sync::Mutex::new(pgwire::Tracker::default());
    let track = || tracker.lock().unwrap_or_else(|p| p.into_inner());
    enum Out {
        Closed(EndReason, Option<String>),
        Cut(EndReason),
    }
    let out = tokio::select! {
        r = async {
            let mut buf = vec![0u8; BUFFER];
            let mut framer = pgwire::Framer::new(pgwire::CLIENT_KEEP);
            loop {
                let n = match cr.read(&mut buf).await {
                    Ok(0) | Err(_) => return (EndReason::ClientClosed, None),
                    Ok(n) => n,
                };
                let now = app.now();
                let fed = {
                    let mut t = track();
                    framer.feed(&buf[..n], |tag, body| {
                        if tag == b'X' {
                            counters.client_done.store(true, Ordering::Relaxed);
                        }
                        t.client(tag, body, now);
                    })
                };
                if let Err(e) = fed {
                    return (EndReason::Error, Some(format!("client broke the protocol: {e}")));
                }
                if uw.write_all(&buf[..n]).await.is_err() {
                    return (EndReason::TargetClosed, None);
                }
                counters.up.fetch_add(n as u64, Ordering::Relaxed);
            }
        } => Out::Closed(r.0, r.1),
        r = async {
            let mut buf = vec![0u8; BUFFER];
            let mut framer = pgwire::Framer::new(pgwire::SERVER_KEEP);
            loop {
                let n = match tokio::time::timeout(recorder::FLUSH_EVERY, ur.read(&mut buf)).await {
                    Err(_) => {
                        recorder.flush();
                        continue;
                    }
                    Ok(Ok(0)) | Ok(Err(_)) => {
                        let why = if counters.client_done.load(Ordering::Relaxed) {
                            EndReason::ClientClosed
                        } else {
                            EndReason::TargetClosed
                        };
                        return (why, None);
                    }
                    Ok(Ok(n)) => n,
                };
                let fed = {
                    let mut t = track();
                    let fed = framer.feed(&buf[..n], |tag, body| t.server(tag, body));
                    for e in t.drain() {
                        recorder.push(&e);
                    }
                    fed
                };
                if let Err(e) = fed {
                    return (EndReason::Error, Some(format!("server broke the protocol: {e}")));
                }
                if send(&mut cw, &buf[..n]).await.is_err() {
                    return (EndReason::ClientClosed, None);
                }
                counters.down.fetch_add(n as u64, Ordering::Relaxed);
            }
        } => Out::Closed(r.0, r.1),
        r = stop => Out::Cut(r),
    };
    // Statements still running when the session ended are logged as cut.
    let (reason, detail) = match out {
        Out::Closed(r, d) => (r, d),
        Out::Cut(r) => {
            let _ = send(
                &mut cw,
                &pgwire::error_response("FATAL", "57P01", &cut_message(r)),
            )
            .await;
            (r, None)
        }
    };
    {
        let mut t = track();
        t.cut(reason.as_str());
        for e in t.drain() {
            recorder.push(&e);
        }
    }
    let _ = cw.shutdown().await;
    (reason, detail)
}

async fn tcp<S, F>(
    addr: &str,
    client: S,
    counters: &Counters,
    stop: F,
) -> (EndReason, Option<String>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
    F: std::future::Future<Output = EndReason>,
{
    let upstream = match tokio::time::timeout(pgwire::LOGIN_TIMEOUT, TcpStream::connect(addr)).await
    {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            return (
                EndReason::Error,
                Some(format!("cannot connect to {addr}: {e}")),
            )
        }
        Err(_) => {
            return (
                EndReason::Error,
                Some(format!("{addr} did not answer in time")),
            )
        }
    };
    let _ = upstream.set_nodelay(true);
    let (mut cr, mut cw) = tokio::io::split(client);
    let (mut ur, mut uw) = upstream.into_split();
    tokio::select! {
        r = async {
            let mut buf = vec![0u8; BUFFER];
            loop {
                let n = match cr.read(&mut buf).await {
                    Ok(0) | Err(_) => {
                        // Half-close: the target may still answer.
                        counters.client_done.store(true, Ordering::Relaxed);
                        let _ = uw.shutdown().await;
                        return std::future::pending().await;
                    }
                    Ok(n) => n,
                };
                if uw.write_all(&buf[..n]).await.is_err() {
                    return (EndReason::TargetClosed, None);
                }
                counters.up.fetch_add(n as u64, Ordering::Relaxed);
            }
        } => r,
        r = async {
            let mut buf = vec![0u8; BUFFER];
            loop {
                let n = match ur.read(&mut buf).await {
                    Ok(0) | Err(_) if counters.client_done.load(Ordering::Relaxed) => {
                        return (EndReason::ClientClosed, None)
                    }
                    Ok(0) | Err(_) => return (EndReason::TargetClosed, None),
                    Ok(n) => n,
                };
                if send(&mut cw, &buf[..n]).await.is_err() {
                    return (EndReason::ClientClosed, None);
                }
                counters.down.fetch_add(n as u64, Ordering::Relaxed);
            }
        } => r,
        r = stop => (r, None),
    }
}

/// Writes to the person's side and flushes: a tunnel may hold written bytes
/// until flushed.
async fn send<W: AsyncWrite + Unpin>(w: &mut W, bytes: &[u8]) -> std::io::Result<()> {
    w.write_all(bytes).await?;
    w.flush().await
}

/// Forwards a PostgreSQL cancel request to the target (best effort, like libpq).
async fn forward_cancel(login: &PgLogin, packet: &[u8; 16]) {
    if let Ok(Ok(mut s)) = tokio::time::timeout(pgwire::LOGIN_TIMEOUT, pgwire::open(login)).await {
        let _ = s.write_all(packet).await;
        let _ = s.shutdown().await;
    }
}

/// The holder's loop: every [`WATCH_EVERY`], cuts sessions whose grant
/// ended, was revoked or locked, or that someone terminated; renews leases;
/// and ends sessions of replicas that died. Runs on every replica.
pub async fn watch(app: Arc<Service>) {
    sweep(&app, true).await;
    let mut tick = tokio::time::interval(WATCH_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let (mut renewed, mut swept) = (Instant::now(), Instant::now());
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = app.stopped() => {
                // Each session records its end before the replica exits.
                app.gateway.cut_all(EndReason::Error);
                while !app.gateway.is_empty() {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                return;
            }
        }
        let live: Vec<(SessionId, RequestId, UserName, EntitlementName)> = app
            .gateway
            .lock()
            .iter()
            .map(|(id, l)| {
                (
                    id.clone(),
                    l.request_id.clone(),
                    l.user.clone(),
                    l.entitlement.clone(),
                )
            })
            .collect();
        if !live.is_empty() {
            let renew = renewed.elapsed() >= RENEW_EVERY;
            if renew {
                renewed = Instant::now();
            }
            check(&app, &live, renew).await;
        }
        if swept.elapsed() >= SWEEP_EVERY {
            swept = Instant::now();
            sweep(&app, false).await;
        }
    }
}

async fn check(
    app: &Arc<Service>,
    live: &[(SessionId, RequestId, UserName, EntitlementName)],
    renew: bool,
) {
    let locked = is_locked;
    if let Ok(locks) = crate::locks::in_force(app).await {
        for (id, _, user, ent) in live {
            if locked(&locks, user, ent) {
                app.gateway.cut(id, EndReason::Locked);
            }
        }
    }
    let ids: Vec<String> = live.iter().map(|(id, ..)| id.to_string()).collect();
    let until = renew.then(|| app.now() + LEASE);
    let seen = match app
        .db_untracked(move |s| s.watch_sessions(&ids, until))
        .await
    {
        Ok(seen) => seen,
        Err(e) => {
            tracing::warn!(error = %e, "gateway: cannot check sessions' grants; retrying");
            return;
        }
    };
    for w in seen {
        let reason = if w.terminate_requested.is_some() {
            EndReason::Terminated
        } else {
            match w.request_state {
                RequestState::Active => continue,
                RequestState::Expired => EndReason::NotAfter,
                _ => {
                    // A lock revokes grants: read the locks afresh to tell which it was.
                    app.locks.invalidate().await;
                    let hit = live.iter().find(|(id, ..)| *id == w.id);
                    match (crate::locks::in_force(app).await, hit) {
                        (Ok(locks), Some((_, _, user, ent))) if locked(&locks, user, ent) => {
                            EndReason::Locked
                        }
                        _ => EndReason::Revoked,
                    }
                }
            }
        };
        app.gateway.cut(&w.id, reason);
    }
}

/// Ends open sessions nobody holds: with `own`, those this replica held
/// before it restarted; always, those whose lease ran out.
async fn sweep(app: &Arc<Service>, own: bool) {
    let now = app.now();
    let replica = app.replica_id.clone();
    let found = app
        .db_untracked(move |s| {
            let mut v = s.abandoned_sessions(now, 100)?;
            if own {
                v.extend(s.list_sessions(&SessionFilter {
                    open: true,
                    replica: Some(replica),
                    limit: 1000,
                    ..Default::default()
                })?);
            }
            Ok(v)
        })
        .await;
    let found = match found {
        Ok(f) => f,
        Err(e) => {
            tracing::warn!(error = %e, "gateway: cannot look for abandoned sessions");
            return;
        }
    };
    for s in found {
        let id = s.id.clone();
        let Ok(recording) = app.db_untracked(move |st| st.session_recording(&id)).await else {
            continue;
        };
        let end = SessionEnd {
            reason: EndReason::Error,
            bytes_up: s.bytes_up,
            bytes_down: s.bytes_down,
            recording_sha256: hex::encode(Sha256::digest(&recording)),
        };
        end_session(
            app,
            &s,
            end,
            Some(format!("replica {} stopped holding it", s.replica)),
        )
        .await;
    }
}

/// The view of a session.
pub fn view(s: &Session) -> SessionView {
    SessionView {
        id: s.id.to_string(),
        request_id: s.request_id.to_string(),
        entitlement: s.entitlement.to_string(),
        user: s.user.to_string(),
        kind: s.kind.as_str().into(),
        started_at: fmt_time(s.started_at),
        ended_at: s.ended_at.map(fmt_time),
        bytes_up: s.bytes_up,
        bytes_down: s.bytes_down,
        end_reason: s.end_reason.map(|r| r.as_str().into()),
        recording_sha256: s.recording_sha256.clone(),
    }
}

/// Whether `who` may read session `s`: its requester, the entitlement's
/// reviewers, admins and auditors.
fn may_read(app: &Service, who: &Principal, s: &Session) -> bool {
    crate::visibility::reads_everything(app, who) || s.user == who.name || reviews(app, who, s)
}

fn reviews(app: &Service, who: &Principal, s: &Session) -> bool {
    app.config
        .entitlement(s.entitlement.as_str())
        .is_ok_and(|e| {
            app.approval_rule(&e.approvals, e.service.as_ref())
                .names_reviewer(who)
        })
}

/// Sessions `who` may read, newest first.
pub async fn list(
    app: &Arc<Service>,
    who: &Principal,
    request: Option<RequestId>,
    limit: u32,
) -> Result<Vec<Session>, ServiceError> {
    let filter = SessionFilter {
        request,
        scope: (!crate::visibility::reads_everything(app, who)).then(|| {
            (
                who.name.clone(),
                crate::visibility::reviewable_entitlements(app, who),
            )
        }),
        limit,
        ..Default::default()
    };
    app.db_untracked(move |s| s.list_sessions(&filter)).await
}

/// One session `who` may read.
pub async fn get(
    app: &Arc<Service>,
    who: &Principal,
    id: SessionId,
) -> Result<Session, ServiceError> {
    let lookup = id.clone();
    app.db_untracked(move |s| s.get_session(&lookup))
        .await?
        .filter(|s| may_read(app, who, s))
        .ok_or_else(|| crate::visibility::hidden(format!("session `{id}`")).into())
}

/// A session's recording (PostgreSQL: the query log, JSON Lines).
pub async fn recording(
    app: &Arc<Service>,
    who: &Principal,
    id: SessionId,
) -> Result<(Session, Vec<u8>), ServiceError> {
    let s = get(app, who, id).await?;
    let lookup = s.id.clone();
    let body = app
        .db_untracked(move |st| st.session_recording(&lookup))
        .await?;
    Ok((s, body))
}

/// Ends a session at once, on whichever replica holds it: the entitlement's
/// reviewers and admins may.
pub async fn terminate(
    app: &Arc<Service>,
    who: &Principal,
    id: SessionId,
) -> Result<Session, ServiceError> {
    let s = get(app, who, id).await?;
    if !(who.admin || reviews(app, who, &s)) {
        return Err(Error::forbidden(
            "only the entitlement's reviewers and admins may terminate a session",
        )
        .into());
    }
    if s.ended_at.is_some() {
        return Err(Error::Conflict {
            current_state: "ended".into(),
            message: format!("session {} has ended already", s.id),
        }
        .into());
    }
    let now = app.now();
    let audit = AuditDraft::new(
        "session.terminate_requested",
        who.name.as_str(),
        subject(&s.id),
        json!({"request": s.request_id}),
    );
    let (sid, by) = (s.id.clone(), who.name.to_string());
    app.db(move |st| st.request_session_terminate(&sid, &by, &audit, now))
        .await?;
    app.gateway.cut(&s.id, EndReason::Terminated);
    Ok(s)
}
