//! SSH through the gateway: an SSH server to the person (the tunnel already
//! says who they are, so any client key, or none, is fine) and an SSH client
//! to the target, logging in with the session's own key and the certificate
//! the provider signed for it. Each session channel the person opens is one
//! channel on the target; requests (PTY, shell, exec, env, window changes,
//! signals) are passed on and their answers passed back in order; what the
//! target prints is recorded as asciicast v2. Port forwarding, agent and X11
//! forwarding and subsystems (sftp) are refused: they would bypass the
//! recording.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use airlock_core::session::EndReason;
use airlock_providers::gateway::SshLogin;
use airlock_providers::ssh::upstream::{self, Connection};
use bytes::Bytes;
use russh::keys::PrivateKey;
use russh::server::{self, Auth, ChannelOpenHandle};
use russh::{client, Channel, ChannelId, ChannelMsg, ChannelOpenFailure, Disconnect, MethodKind};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;

use super::cast::Cast;
use super::recorder::{Recorder, FLUSH_EVERY};
use super::Counters;

/// How long the goodbye may take to reach the person after the gateway cut
/// the session (the cut itself must land within a second of its cause).
const CLOSE_GRACE: Duration = Duration::from_millis(300);
/// Keepalives both ways, so a dead peer is noticed.
const KEEPALIVE: Duration = Duration::from_secs(30);
/// Bytes in flight between the tunnel and the SSH server task.
const PIPE: usize = 256 * 1024;

/// What the channel tasks tell the session: recorded and counted there.
enum Event {
    Pty { cols: u32, rows: u32, term: String },
    Start { command: Option<String> },
    Resize { cols: u32, rows: u32 },
    Output(Bytes),
    Input(usize),
}

/// What every handler and channel task of one session shares.
struct Shared {
    login: SshLogin,
    events: mpsc::UnboundedSender<Event>,
    upstream: tokio::sync::Mutex<Option<Arc<Connection>>>,
    /// The person's open channels, told why when the gateway cuts the session.
    channels: Mutex<Vec<ChannelId>>,
}

impl Shared {
    fn event(&self, e: Event) {
        let _ = self.events.send(e);
    }

    fn channels(&self) -> std::sync::MutexGuard<'_, Vec<ChannelId>> {
        self.channels.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The connection to the target, logged in as `user` (made once).
    async fn upstream(&self, user: &str) -> Result<Arc<Connection>, String> {
        let mut slot = self.upstream.lock().await;
        if let Some(h) = slot.as_ref().filter(|h| !h.is_closed()) {
            return Ok(h.clone());
        }
        let h = Arc::new(
            upstream::login(&self.login, user)
                .await
                .map_err(|e| e.to_string())?,
        );
        *slot = Some(h.clone());
        Ok(h)
    }
}

/// The gateway as the person's server.
struct Front {
    shared: Arc<Shared>,
    /// The login name chosen at authentication.
    user: Option<String>,
}

impl Front {
    /// The tunnel is the identity: any method is fine, but only a login name
    /// the certificate is good for (the only one, when there is one).
    fn admit(&mut self, asked: &str) -> Auth {
        match choose_user(&self.shared.login.principals, asked) {
            Some(u) => {
                self.user = Some(u);
                Auth::Accept
            }
            None => Auth::reject(),
        }
    }
}

/// The login name for a client asking for `asked`.
fn choose_user(principals: &[String], asked: &str) -> Option<String> {
    if principals.iter().any(|p| p == asked) {
        return Some(asked.to_string());
    }
    match principals {
        [only] => Some(only.clone()),
        _ => None,
    }
}

impl server::Handler for Front {
    type Error = russh::Error;

    async fn authentication_banner(&mut self) -> Result<Option<String>, Self::Error> {
        let p = &self.shared.login.principals;
        Ok((p.len() > 1).then(|| {
            format!(
                "airlock gateway: log in as one of {} (ssh USER@...)\r\n",
                p.join(", ")
            )
        }))
    }

    async fn auth_none(&mut self, user: &str) -> Result<Auth, Self::Error> {
        Ok(self.admit(user))
    }

    async fn auth_publickey(
        &mut self,
        user: &str,
        _key: server::VerifiedPublicKey<'_>,
    ) -> Result<Auth, Self::Error> {
        Ok(self.admit(user))
    }

    async fn channel_open_session(
        &mut self,
        channel: Channel<server::Msg>,
        reply: ChannelOpenHandle,
        session: &mut server::Session,
    ) -> Result<(), Self::Error> {
        let Some(user) = self.user.clone() else {
            reply
                .reject(ChannelOpenFailure::AdministrativelyProhibited)
                .await;
            return Ok(());
        };
        let opened = match self.shared.upstream(&user).await {
            Ok(up) => up
                .channel_open_session()
                .await
                .map_err(|e| format!("the target refused a session channel: {e}")),
            Err(e) => Err(e),
        };
        let up = match opened {
            Ok(c) => c,
            Err(reason) => {
                tracing::info!(error = %reason, "gateway: ssh channel refused");
                reply
                    .reject(ChannelOpenFailure::Other {
                        code: 2, // SSH_OPEN_CONNECT_FAILED
                        reason: format!("airlock gateway: {reason}"),
                    })
                    .await;
                return Ok(());
            }
        };
        reply.accept().await;
        self.shared.channels().push(channel.id());
        tokio::spawn(pump(channel, up, session.handle(), self.shared.clone()));
        Ok(())
    }
}

/// An answer the person's client waits for, in the order it asked.
enum Pending {
    /// Passed on: the target's answer is passed back.
    Forwarded,
    /// Refused here: answered with failure once the earlier ones are.
    Refused,
}

/// Relays one channel both ways until either side closes it.
async fn pump(
    down: Channel<server::Msg>,
    up: Channel<client::Msg>,
    person: server::Handle,
    shared: Arc<Shared>,
) {
    let id = down.id();
    let (mut down_rx, down_tx) = down.split();
    let (mut up_rx, up_tx) = up.split();
    let pending: Mutex<VecDeque<Pending>> = Mutex::new(VecDeque::new());
    let queue = || pending.lock().unwrap_or_else(|p| p.into_inner());

    let from_person = async {
        while let Some(m) = down_rx.wait().await {
            let sent = match m {
                ChannelMsg::Data { data } => {
                    shared.event(Event::Input(data.len()));
                    up_tx.data_bytes(data).await
                }
                ChannelMsg::RequestPty {
                    term,
                    col_width,
                    row_height,
                    pix_width,
                    pix_height,
                    terminal_modes,
                    ..
                } => {
                    shared.event(Event::Pty {
                        cols: col_width,
                        rows: row_height,
                        term: term.clone(),
                    });
                    queue().push_back(Pending::Forwarded);
                    up_tx
                        .request_pty(
                            true,
                            &term,
                            col_width,
                            row_height,
                            pix_width,
                            pix_height,
                            &terminal_modes,
                        )
                        .await
                }
                ChannelMsg::RequestShell { .. } => {
                    shared.event(Event::Start { command: None });
                    queue().push_back(Pending::Forwarded);
                    up_tx.request_shell(true).await
                }
                ChannelMsg::Exec { command, .. } => {
                    shared.event(Event::Start {
                        command: Some(String::from_utf8_lossy(&command).into_owned()),
                    });
                    queue().push_back(Pending::Forwarded);
                    up_tx.exec(true, command).await
                }
                ChannelMsg::SetEnv {
                    variable_name,
                    variable_value,
                    ..
                } => up_tx.set_env(false, variable_name, variable_value).await,
                ChannelMsg::WindowChange {
                    col_width,
                    row_height,
                    pix_width,
                    pix_height,
                } => {
                    shared.event(Event::Resize {
                        cols: col_width,
                        rows: row_height,
                    });
                    up_tx
                        .window_change(col_width, row_height, pix_width, pix_height)
                        .await
                }
                ChannelMsg::Signal { signal } => up_tx.signal(signal).await,
                ChannelMsg::Eof => up_tx.eof().await,
                ChannelMsg::Close => break,
                ChannelMsg::RequestSubsystem { .. } | ChannelMsg::RequestX11 { .. } => {
                    let answer_now = {
                        let mut q = queue();
                        let empty = q.is_empty();
                        if !empty {
                            q.push_back(Pending::Refused);
                        }
                        empty
                    };
                    if answer_now {
                        let _ = person.channel_failure(id).await;
                    }
                    Ok(())
                }
                _ => Ok(()),
            };
            if sent.is_err() {
                break;
            }
        }
        let _ = up_tx.close().await;
    };

    let from_target = async {
        while let Some(m) = up_rx.wait().await {
            let sent = match m {
                ChannelMsg::Data { data } => {
                    shared.event(Event::Output(data.clone()));
                    down_tx.data_bytes(data).await
                }
                ChannelMsg::ExtendedData { data, ext } => {
                    shared.event(Event::Output(data.clone()));
                    down_tx.extended_data_bytes(ext, data).await
                }
                ChannelMsg::Success | ChannelMsg::Failure => {
                    let ok = matches!(m, ChannelMsg::Success);
                    let answers: Vec<bool> = {
                        let mut q = queue();
                        let mut answers = Vec::new();
                        if q.pop_front().is_some() {
                            answers.push(ok);
                        }
                        while matches!(q.front(), Some(Pending::Refused)) {
                            q.pop_front();
                            answers.push(false);
                        }
                        answers
                    };
                    for ok in answers {
                        let _ = if ok {
                            person.channel_success(id).await
                        } else {
                            person.channel_failure(id).await
                        };
                    }
                    Ok(())
                }
                ChannelMsg::ExitStatus { exit_status } => down_tx.exit_status(exit_status).await,
                ChannelMsg::ExitSignal {
                    signal_name,
                    core_dumped,
                    error_message,
                    lang_tag,
                } => {
                    let _ = person
                        .exit_signal_request(id, signal_name, core_dumped, error_message, lang_tag)
                        .await;
                    Ok(())
                }
                ChannelMsg::Eof => down_tx.eof().await,
                ChannelMsg::Close => break,
                _ => Ok(()),
            };
            if sent.is_err() {
                break;
            }
        }
        let _ = down_tx.close().await;
    };

    tokio::join!(from_person, from_target);
    shared.channels().retain(|c| *c != id);
}

/// Runs one SSH session over `client` until the person disconnects or `stop`
/// fires; records the terminal output and counts channel bytes each way.
pub(super) async fn relay<S, F>(
    app: &Arc<crate::Service>,
    login: &SshLogin,
    client: S,
    counters: &Counters,
    recorder: &Recorder,
    stop: F,
    cut_message: impl Fn(EndReason) -> String,
) -> (EndReason, Option<String>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
    F: Future<Output = EndReason>,
{
    let host_key = match PrivateKey::from_openssh(login.host_key.as_str()) {
        Ok(k) => k,
        Err(e) => {
            return (
                EndReason::Error,
                Some(format!("gateway host key unusable: {e}")),
            )
        }
    };
    let config = Arc::new(server::Config {
        server_id: russh::SshId::Standard("SSH-2.0-airlock_gateway".into()),
        methods: russh::MethodSet::from(&[MethodKind::None, MethodKind::PublicKey][..]),
        // Nothing to guess here: the tunnel authenticated the person already.
        auth_rejection_time: Duration::from_millis(50),
        auth_rejection_time_initial: Some(Duration::ZERO),
        keys: vec![host_key],
        // The grant, not idleness, bounds a session.
        inactivity_timeout: None,
        keepalive_interval: Some(KEEPALIVE),
        nodelay: true,
        ..Default::default()
    });
    let (events_tx, mut events) = mpsc::unbounded_channel();
    let shared = Arc::new(Shared {
        login: login.clone(),
        events: events_tx,
        upstream: tokio::sync::Mutex::new(None),
        channels: Mutex::new(Vec::new()),
    });
    let front = Front {
        shared: shared.clone(),
        user: None,
    };
    // The SSH server runs in a task of its own, so it gets an owned pipe;
    // the tunnel (borrowed: the caller closes it with the end reason) is
    // copied to and from the other end.
    let (ours, theirs) = tokio::io::duplex(PIPE);
    let mut copy = std::pin::pin!(async move {
        let (mut client, mut pipe) = (client, ours);
        let _ = tokio::io::copy_bidirectional(&mut client, &mut pipe).await;
        // Dropping our end is the SSH server's end of stream, also when the
        // tunnel broke instead of closing (ssh kills its ProxyCommand).
        drop(pipe);
    });
    let mut stop = std::pin::pin!(stop);
    let started = tokio::select! {
        r = server::run_stream(config, theirs, front) => r,
        _ = &mut copy => return (EndReason::ClientClosed, None),
        r = &mut stop => return (r, None),
    };
    let running = match started {
        Ok(r) => r,
        Err(e) => return (EndReason::ClientClosed, Some(format!("ssh handshake: {e}"))),
    };
    let person = running.handle();
    let mut running = std::pin::pin!(running);
    let mut copied = false;
    let mut tape = Tape {
        app,
        cast: Cast::default(),
        origin: Instant::now(),
        counters,
        recorder,
    };
    let mut flush = tokio::time::interval(FLUSH_EVERY);
    let outcome = loop {
        tokio::select! {
            r = &mut running => break match r {
                Ok(()) => (EndReason::ClientClosed, None),
                Err(russh::Error::Disconnect) | Err(russh::Error::IO(_)) => (EndReason::ClientClosed, None),
                Err(e) => (EndReason::ClientClosed, Some(e.to_string())),
            },
            Some(e) = events.recv() => tape.record(e),
            _ = &mut copy, if !copied => copied = true,
            _ = flush.tick() => recorder.flush(),
            r = &mut stop => {
                let message = cut_message(r);
                let open: Vec<ChannelId> = shared.channels().clone();
                for id in open {
                    let line = format!("\r\n{message}\r\n");
                    let _ = person.extended_data(id, 1, Bytes::from(line)).await;
                }
                let _ = person
                    .disconnect(Disconnect::ByApplication, message, "en".into())
                    .await;
                // The goodbye still has to cross the pipe to the tunnel, but
                // the session is over now, whether or not the client answers.
                let grace = tokio::time::sleep(CLOSE_GRACE);
                tokio::pin!(grace);
                loop {
                    tokio::select! {
                        _ = &mut running => break,
                        _ = &mut copy, if !copied => copied = true,
                        _ = &mut grace => break,
                    }
                }
                break (r, None);
            }
        }
    };
    if let Some(up) = shared.upstream.lock().await.take() {
        let _ = up
            .disconnect(Disconnect::ByApplication, "session ended", "en")
            .await;
    }
    while let Ok(e) = events.try_recv() {
        tape.record(e);
    }
    tape.finish();
    outcome
}

/// Records the events of one session.
struct Tape<'a> {
    app: &'a Arc<crate::Service>,
    cast: Cast,
    origin: Instant,
    counters: &'a Counters,
    recorder: &'a Recorder,
}

impl Tape<'_> {
    fn at(&self) -> f64 {
        self.origin.elapsed().as_secs_f64()
    }

    fn start(&mut self, command: Option<&str>) {
        let unix = self.app.now().unix_timestamp();
        if let Some(h) = self.cast.start(unix, self.at(), command) {
            self.recorder.push(&h);
        }
    }

    fn record(&mut self, e: Event) {
        match e {
            Event::Pty { cols, rows, term } => self.cast.pty(cols, rows, &term),
            Event::Start { command } => self.start(command.as_deref()),
            Event::Resize { cols, rows } => {
                self.start(None);
                let r = self.cast.resize(self.at(), cols, rows);
                self.recorder.push(&r);
            }
            Event::Output(bytes) => {
                self.counters
                    .down
                    .fetch_add(bytes.len() as u64, Ordering::Relaxed);
                self.start(None);
                if let Some(o) = self.cast.output(self.at(), &bytes) {
                    self.recorder.push(&o);
                }
            }
            Event::Input(n) => {
                self.counters.up.fetch_add(n as u64, Ordering::Relaxed);
            }
        }
    }

    fn finish(&mut self) {
        if let Some(o) = self.cast.finish(self.at()) {
            self.recorder.push(&o);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::choose_user;

    #[test]
    fn the_login_name_is_a_principal() {
        let one = vec!["deploy".to_string()];
        assert_eq!(choose_user(&one, "deploy").as_deref(), Some("deploy"));
        assert_eq!(
            choose_user(&one, "root").as_deref(),
            Some("deploy"),
            "the only principal replaces any other name"
        );
        let two = vec!["deploy".to_string(), "ops".to_string()];
        assert_eq!(choose_user(&two, "ops").as_deref(), Some("ops"));
        assert_eq!(choose_user(&two, "root"), None);
    }
}
