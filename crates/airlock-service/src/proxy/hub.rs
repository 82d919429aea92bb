//! Runs executing in this process: their cancel switches and live output for
//! viewers that attach late (output so far, then what follows). Runs on other
//! replicas are followed through the store instead.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use airlock_core::run::RunId;
use airlock_core::tool::RunAs;
use airlock_core::{OperationName, ToolName};
use bytes::Bytes;
use tokio::sync::{broadcast, watch, Notify};

/// Output chunks fanned out to late viewers (lossy if a viewer lags).
const VIEWER_BUFFER: usize = 256;

/// Output of a run as a late viewer sees it.
#[derive(Debug, Clone)]
pub enum Chunk {
    Stdout(Bytes),
    Stderr(Bytes),
}

/// One run executing here.
pub struct LiveRun {
    cancel: watch::Sender<Option<String>>,
    state: Mutex<LiveState>,
}

struct LiveState {
    /// Output so far, up to the transcript cap (what a late viewer replays).
    so_far: Vec<(bool, Bytes)>,
    kept: usize,
    cap: usize,
    viewers: broadcast::Sender<Chunk>,
}

impl LiveRun {
    fn lock(&self) -> MutexGuard<'_, LiveState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records output and hands it to viewers.
    pub fn publish(&self, stderr: bool, data: &Bytes) {
        let mut st = self.lock();
        if st.kept < st.cap {
            let take = data.len().min(st.cap - st.kept);
            st.kept += take;
            st.so_far.push((stderr, data.slice(..take)));
        }
        let chunk = if stderr {
            Chunk::Stderr(data.clone())
        } else {
            Chunk::Stdout(data.clone())
        };
        let _ = st.viewers.send(chunk);
    }

    /// Output so far and a receiver for what follows, taken atomically.
    pub fn follow(&self) -> (Vec<(bool, Bytes)>, broadcast::Receiver<Chunk>) {
        let st = self.lock();
        (st.so_far.clone(), st.viewers.subscribe())
    }

    /// Asks the executor to kill the run's process group.
    pub fn cancel(&self, by: &str) {
        let _ = self.cancel.send(Some(by.to_string()));
    }

    /// The executor's side of the cancel switch.
    pub fn cancelled(&self) -> watch::Receiver<Option<String>> {
        self.cancel.subscribe()
    }
}

/// Registry of runs executing in this process.
#[derive(Default)]
pub struct Hub {
    live: Mutex<HashMap<RunId, Arc<LiveRun>>>,
    /// Wakes the background loop when a run may have become due.
    pub wake: Notify,
    /// `(uid, gid)` of each tool's `run_as` user, resolved at start-up
    /// (`None`: `run_as = "server"`).
    run_as: HashMap<ToolName, Option<(u32, u32)>>,
    /// The same for each operation, whose `run_as` wins over its tool's.
    op_run_as: HashMap<OperationName, Option<(u32, u32)>>,
}

impl Hub {
    /// A registry for `config`'s tools; fails if a `run_as` user does not exist.
    pub fn new(config: &airlock_core::config::Config) -> Result<Hub, crate::SetupError> {
        let resolve = |ctx: String, r: &RunAs| match r.user() {
            None => Ok(None),
            Some(user) => super::executor::lookup_user(user)
                .map(Some)
                .map_err(|e| format!("{ctx}: run_as: {e}")),
        };
        let mut run_as = HashMap::new();
        for t in config.tools.values() {
            let ids = resolve(format!("[[tool]] `{}`", t.name), &t.run_as)?;
            run_as.insert(t.name.clone(), ids);
        }
        let mut op_run_as = HashMap::new();
        for o in config.operations.values() {
            let ids = resolve(format!("[[operation]] `{}`", o.name), &o.run_as)?;
            op_run_as.insert(o.name.clone(), ids);
        }
        Ok(Hub {
            run_as,
            op_run_as,
            ..Hub::default()
        })
    }

    /// `(uid, gid)` a run of `tool` (through `operation`, if any) executes as;
    /// `None`: the server's own user, only when the catalog says `run_as = "server"`.
    pub fn run_as(&self, tool: &ToolName, operation: Option<&OperationName>) -> Option<(u32, u32)> {
        operation
            .and_then(|o| self.op_run_as.get(o))
            .or_else(|| self.run_as.get(tool))
            .copied()
            .flatten()
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<RunId, Arc<LiveRun>>> {
        self.live.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers a run that starts executing here.
    pub fn register(&self, id: &RunId, cap: usize) -> Arc<LiveRun> {
        let (cancel, _) = watch::channel(None);
        let (viewers, _) = broadcast::channel(VIEWER_BUFFER);
        let live = Arc::new(LiveRun {
            cancel,
            state: Mutex::new(LiveState {
                so_far: Vec::new(),
                kept: 0,
                cap,
                viewers,
            }),
        });
        self.lock().insert(id.clone(), live.clone());
        live
    }

    /// Forgets a run that finished.
    pub fn remove(&self, id: &RunId) {
        self.lock().remove(id);
    }

    /// The run, if it executes here.
    pub fn get(&self, id: &RunId) -> Option<Arc<LiveRun>> {
        self.lock().get(id).cloned()
    }

    /// How many runs execute here now.
    pub fn running(&self) -> usize {
        self.lock().len()
    }
}
