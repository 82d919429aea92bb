//! Runs one program: an argv list (never a shell), an environment of only
//! the tool's variables plus PATH and LANG, stdin from /dev/null, an empty
//! private working directory, and a fresh process group that is killed as a
//! whole at the timeout, on cancel, and when the program exits (so nothing it
//! started outlives the run). Output is streamed as it arrives and kept up to
//! the transcript cap.

use std::collections::BTreeMap;
use std::os::fd::AsRawFd;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use airlock_store::Transcript;
use bytes::Bytes;
use sha2::{Digest, Sha256};
use tokio::io::AsyncReadExt;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use super::frames::{self, Kind};
use super::hub::LiveRun;

/// Bytes read from a pipe at once.
const READ_CHUNK: usize = 256 * 1024;
/// After SIGTERM at the timeout or on cancel, how long before SIGKILL.
const KILL_GRACE: Duration = Duration::from_secs(2);
/// After the program exits, how long to keep reading output still in the pipes.
const DRAIN: Duration = Duration::from_secs(2);
/// Requested pipe buffer size for a tool's stdout and stderr.
const PIPE_SIZE: libc::c_int = 1024 * 1024;
/// PATH for tools when the server has none.
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// What to run.
#[derive(Debug, Clone)]
pub struct Job {
    /// Absolute program path, then arguments.
    pub argv: Vec<String>,
    /// The tool's environment (server-held credentials).
    pub env: BTreeMap<String, String>,
    pub timeout: Duration,
    /// Transcript cap in bytes.
    pub cap: usize,
    /// `(uid, gid)` to run as (the tool's `run_as`); `None`: the server's user.
    pub run_as: Option<(u32, u32)>,
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ending {
    /// The program exited by itself.
    Exited(i32),
    /// The program was killed by a signal it did not get from airlock.
    Signaled(i32),
    /// Killed at the timeout.
    TimedOut,
    /// Killed because someone cancelled it.
    Cancelled(String),
    /// The program could not be started.
    NotStarted(String),
}

/// The result of [`execute`].
#[derive(Debug, Clone)]
pub struct Outcome {
    pub ending: Ending,
    /// Exit status as a shell reports it (128 + signal when killed).
    pub exit_code: Option<i32>,
    pub transcript: Transcript,
}

impl Outcome {
    /// Words for the run's `error` field, if it did not simply exit.
    pub fn error(&self, timeout: Duration) -> Option<String> {
        match &self.ending {
            Ending::Exited(_) => None,
            Ending::Signaled(s) => Some(format!("killed by signal {s}")),
            Ending::TimedOut => Some(format!(
                "killed (whole process group) at the tool's timeout of {}s",
                timeout.as_secs()
            )),
            Ending::Cancelled(by) => {
                Some(format!("cancelled by {by}; its process group was killed"))
            }
            Ending::NotStarted(e) => Some(e.clone()),
        }
    }
}

/// stdout+stderr as kept: the first `cap` bytes, then a marker.
struct Capture {
    kept: Vec<u8>,
    cap: usize,
    total: u64,
}

impl Capture {
    fn new(cap: usize) -> Capture {
        Capture {
            kept: Vec::new(),
            cap,
            total: 0,
        }
    }

    fn push(&mut self, data: &[u8]) {
        self.total += data.len() as u64;
        let room = self.cap.saturating_sub(self.kept.len());
        self.kept.extend_from_slice(&data[..data.len().min(room)]);
    }

    fn finish(mut self) -> Transcript {
        let truncated = self.total > self.kept.len() as u64;
        if truncated {
            self.kept.extend_from_slice(
                format!(
                    "\n[airlock: transcript truncated at {} bytes; the tool wrote {} bytes]\n",
                    self.cap, self.total
                )
                .as_bytes(),
            );
        }
        Transcript {
            sha256: hex::encode(Sha256::digest(&self.kept)),
            bytes: self.kept,
            output_bytes: self.total,
            truncated,
        }
    }
}

fn killpg(pgid: i32, sig: i32) {
    // SAFETY: killpg only sends a signal; an absent group is ESRCH, ignored.
    unsafe {
        libc::killpg(pgid, sig);
    }
}

/// A private, empty working directory for one run, owned by the user it runs as.
fn work_dir(owner: Option<(u32, u32)>) -> std::io::Result<PathBuf> {
    use std::os::unix::fs::DirBuilderExt;
    let dir = std::env::temp_dir().join(format!(
        "airlock-run-{}-{:016x}",
        std::process::id(),
        rand::random::<u64>()
    ));
    std::fs::DirBuilder::new().mode(0o700).create(&dir)?;
    if let Some((uid, gid)) = owner {
        if let Err(e) = std::os::unix::fs::chown(&dir, Some(uid), Some(gid)) {
            let _ = std::fs::remove_dir(&dir);
            return Err(e);
        }
    }
    Ok(dir)
}

/// The `(uid, gid)` of OS user `name`, for a tool's `run_as`.
pub fn lookup_user(name: &str) -> Result<(u32, u32), crate::SetupError> {
    let c = std::ffi::CString::new(name).map_err(|_| format!("user `{name}` contains NUL"))?;
    let mut buf = vec![0 as libc::c_char; 16 * 1024];
    // SAFETY: getpwnam_r writes only into `pwd` and `buf`, both valid for its whole call.
    unsafe {
        let mut pwd: libc::passwd = std::mem::zeroed();
        let mut out: *mut libc::passwd = std::ptr::null_mut();
        let rc = libc::getpwnam_r(c.as_ptr(), &mut pwd, buf.as_mut_ptr(), buf.len(), &mut out);
        if rc != 0 {
            return Err(format!(
                "cannot look up user `{name}`: {}",
                std::io::Error::from_raw_os_error(rc)
            )
            .into());
        }
        if out.is_null() {
            return Err(format!("user `{name}` does not exist on this server").into());
        }
        Ok((pwd.pw_uid, pwd.pw_gid))
    }
}

fn command(job: &Job, cwd: &PathBuf) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(&job.argv[0]);
    cmd.args(&job.argv[1..])
        .env_clear()
        .env(
            "PATH",
            std::env::var("PATH").unwrap_or_else(|_| DEFAULT_PATH.to_string()),
        )
        .env(
            "LANG",
            std::env::var("LANG").unwrap_or_else(|_| "C.UTF-8".to_string()),
        )
        .envs(&job.env)
        .current_dir(cwd)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    if let Some((uid, gid)) = job.run_as {
        // std clears supplementary groups when it changes the user.
        cmd.uid(uid).gid(gid);
    }
    cmd
}

/// Marks every descriptor above stderr close-on-exec, so nothing airlock
/// itself inherited without that flag (e.g. from its own parent) reaches a
/// tool. Called once at start-up; descriptors airlock opens later are
/// close-on-exec already (Rust's default), so tools are spawned with
/// `posix_spawn` and no code runs between fork and exec.
pub fn close_inherited_descriptors() {
    const CLOSE_RANGE_CLOEXEC: libc::c_uint = 1 << 2;
    // SAFETY: plain syscalls on this process's own descriptor table.
    unsafe {
        if libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, CLOSE_RANGE_CLOEXEC) == 0 {
            return;
        }
        let mut lim: libc::rlimit = std::mem::zeroed();
        let max = if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 {
            lim.rlim_cur.min(65_536) as i32
        } else {
            4096
        };
        for fd in 3..max {
            libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC);
        }
    }
}

/// Where output goes besides the transcript.
pub struct Sinks<'a> {
    /// The attached client's stream (frames); dropped if it stalls past the deadline or goes away.
    pub client: Option<mpsc::Sender<Bytes>>,
    /// Late viewers in this process.
    pub live: Option<&'a LiveRun>,
}

impl Sinks<'_> {
    /// Hands on one output frame (from [`frames::open`], payload filled).
    async fn emit(&mut self, stderr: bool, frame: Vec<u8>, deadline: Instant) {
        let f = frames::seal(frame);
        if let Some(live) = self.live {
            live.publish(stderr, &f.slice(frames::HEADER_LEN..));
        }
        if let Some(tx) = &self.client {
            // A client that stops reading must not hold the run past its timeout.
            match tokio::time::timeout_at(deadline, tx.send(f)).await {
                Ok(Ok(())) => {}
                _ => self.client = None,
            }
        }
    }
}

/// Runs `job` to its end. `cancel` carries who cancelled, once someone does.
pub async fn execute(
    job: &Job,
    mut sinks: Sinks<'_>,
    mut cancel: watch::Receiver<Option<String>>,
) -> Outcome {
    let not_started = |e: String| Outcome {
        ending: Ending::NotStarted(e),
        exit_code: None,
        transcript: Capture::new(job.cap).finish(),
    };
    let cwd = match work_dir(job.run_as) {
        Ok(d) => d,
        Err(e) => return not_started(format!("cannot create a working directory: {e}")),
    };
    let outcome = run_in(job, &cwd, &mut sinks, &mut cancel).await;
    let _ = std::fs::remove_dir_all(&cwd);
    match outcome {
        Ok(o) => o,
        Err(e) => not_started(e.0),
    }
}

/// Why a program could not be started (the run records it as not started).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct StartFailure(String);

impl From<String> for StartFailure {
    fn from(s: String) -> Self {
        StartFailure(s)
    }
}

impl From<&str> for StartFailure {
    fn from(s: &str) -> Self {
        StartFailure(s.to_string())
    }
}

async fn run_in(
    job: &Job,
    cwd: &PathBuf,
    sinks: &mut Sinks<'_>,
    cancel: &mut watch::Receiver<Option<String>>,
) -> Result<Outcome, StartFailure> {
    let mut child = command(job, cwd)
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", job.argv[0]))?;
    let pgid = child
        .id()
        .map(|p| p as i32)
        .ok_or_else(|| "the program exited before airlock saw it start".to_string())?;
    let mut out = child.stdout.take().ok_or("no stdout pipe")?;
    let mut err = child.stderr.take().ok_or("no stderr pipe")?;
    // Larger pipes: fewer wake-ups for chatty tools (best effort).
    for fd in [out.as_raw_fd(), err.as_raw_fd()] {
        // SAFETY: fcntl on a descriptor we own; failure only keeps the default size.
        unsafe {
            libc::fcntl(fd, libc::F_SETPIPE_SZ, PIPE_SIZE);
        }
    }
    // Output is read straight into frames: no copy between the pipe and the socket.
    let (mut out_buf, mut err_buf) = (
        frames::open(Kind::Stdout, READ_CHUNK),
        frames::open(Kind::Stderr, READ_CHUNK),
    );
    let (mut out_open, mut err_open) = (true, true);
    let mut capture = Capture::new(job.cap);
    let deadline = Instant::now() + job.timeout;
    let far = Instant::now() + Duration::from_secs(400 * 86400);
    let mut status = None;
    let mut killed: Option<Ending> = None;
    let mut sigkill_at = far;
    let mut drain_until = far;
    loop {
        if status.is_some() && !out_open && !err_open {
            break;
        }
        tokio::select! {
            n = out.read_buf(&mut out_buf), if out_open => match n {
                Ok(n) if n > 0 => {
                    let f = std::mem::replace(&mut out_buf, frames::open(Kind::Stdout, READ_CHUNK));
                    capture.push(&f[frames::HEADER_LEN..]);
                    sinks.emit(false, f, deadline).await;
                }
                _ => out_open = false,
            },
            n = err.read_buf(&mut err_buf), if err_open => match n {
                Ok(n) if n > 0 => {
                    let f = std::mem::replace(&mut err_buf, frames::open(Kind::Stderr, READ_CHUNK));
                    capture.push(&f[frames::HEADER_LEN..]);
                    sinks.emit(true, f, deadline).await;
                }
                _ => err_open = false,
            },
            st = child.wait(), if status.is_none() => {
                // Whatever the program left behind in its group goes with it.
                killpg(pgid, libc::SIGKILL);
                status = Some(st.map_err(|e| format!("waiting for the program failed: {e}"))?);
                drain_until = Instant::now() + DRAIN;
            }
            _ = tokio::time::sleep_until(deadline), if killed.is_none() && status.is_none() => {
                killpg(pgid, libc::SIGTERM);
                killed = Some(Ending::TimedOut);
                sigkill_at = Instant::now() + KILL_GRACE;
            }
            r = cancel.changed(), if killed.is_none() && status.is_none() => {
                let by = match r {
                    Ok(()) => cancel.borrow().clone(),
                    // The switch was dropped: the server is going away.
                    Err(_) => Some("the server shutting down".to_string()),
                };
                if let Some(by) = by {
                    killpg(pgid, libc::SIGTERM);
                    killed = Some(Ending::Cancelled(by));
                    sigkill_at = Instant::now() + KILL_GRACE;
                }
            }
            _ = tokio::time::sleep_until(sigkill_at), if status.is_none() => {
                killpg(pgid, libc::SIGKILL);
                sigkill_at = far;
            }
            // A process that left the group (setsid) may hold the pipes open: stop reading.
            _ = tokio::time::sleep_until(drain_until) => break,
        }
    }
    let status = status.ok_or("the program's status is unknown")?;
    let exit_code = status.code().or_else(|| status.signal().map(|s| 128 + s));
    let ending = match (killed, status.code(), status.signal()) {
        (Some(k), _, _) => k,
        (None, Some(c), _) => Ending::Exited(c),
        (None, None, Some(s)) => Ending::Signaled(s),
        (None, None, None) => Ending::Exited(-1),
    };
    Ok(Outcome {
        ending,
        exit_code,
        transcript: capture.finish(),
    })
}

/// Makes this process's memory, environment and descriptors unreadable to
/// other processes of the same user — in particular to the tools it runs
/// (`/proc/PPID/environ` holds the bootstrap token and database URL).
pub fn harden_process() {
    // SAFETY: prctl(PR_SET_DUMPABLE) only changes this process's own flag.
    let rc = unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) };
    if rc != 0 {
        tracing::warn!(error = %std::io::Error::last_os_error(), "could not mark the server non-dumpable");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transcript_is_capped_with_a_marker_and_hashed_as_stored() {
        let mut c = Capture::new(8);
        c.push(b"12345");
        c.push(b"67890");
        let t = c.finish();
        assert!(t.truncated);
        assert_eq!(t.output_bytes, 10);
        assert!(t.bytes.starts_with(
            b"12345678\n[airlock: transcript truncated at 8 bytes; the tool wrote 10 bytes]"
        ));
        assert_eq!(t.sha256, hex::encode(Sha256::digest(&t.bytes)));
        let t = Capture::new(8).finish();
        assert!(!t.truncated && t.bytes.is_empty());
    }
}
