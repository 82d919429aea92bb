//! A session's recording on its way to the store: lines are buffered and
//! written as numbered chunks by a task of their own (the relay never waits
//! for the database), and hashed as they go, so the `session.ended` event
//! names exactly the bytes the store holds.

use std::sync::Arc;
use std::time::Duration;

use airlock_core::session::SessionId;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use crate::Service;

/// A chunk is written once it holds this much.
const CHUNK: usize = 64 * 1024;
/// An idle session's buffered lines are written after at most this long.
pub const FLUSH_EVERY: Duration = Duration::from_secs(1);

/// The recording of one session.
pub struct Recorder {
    state: std::sync::Mutex<State>,
    writer: tokio::task::JoinHandle<()>,
}

struct State {
    buf: Vec<u8>,
    seq: u64,
    hash: Sha256,
    tx: Option<mpsc::UnboundedSender<(u64, Vec<u8>)>>,
}

impl Recorder {
    /// Starts the writer task for session `id`.
    pub fn start(app: Arc<Service>, id: SessionId) -> Recorder {
        let (tx, mut rx) = mpsc::unbounded_channel::<(u64, Vec<u8>)>();
        let writer = tokio::spawn(async move {
            while let Some((seq, body)) = rx.recv().await {
                let sid = id.clone();
                if let Err(e) = app
                    .db_untracked(move |s| s.append_recording(&sid, seq, &body))
                    .await
                {
                    // The hash in session.ended then shows the gap.
                    tracing::warn!(session = %id, seq, error = %e, "gateway: recording chunk lost");
                }
            }
        });
        Recorder {
            state: std::sync::Mutex::new(State {
                buf: Vec::new(),
                seq: 0,
                hash: Sha256::new(),
                tx: Some(tx),
            }),
            writer,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Appends one JSON line.
    pub fn push(&self, event: &impl serde::Serialize) {
        let mut st = self.lock();
        if serde_json::to_writer(&mut st.buf, event).is_ok() {
            st.buf.push(b'\n');
        }
        if st.buf.len() >= CHUNK {
            st.send();
        }
    }

    /// Hands buffered lines to the writer now.
    pub fn flush(&self) {
        self.lock().send();
    }

    /// Writes what is left, waits for the writer, and returns the SHA-256
    /// (hex) of the whole recording.
    pub async fn finish(self) -> String {
        let hash = {
            let mut st = self.lock();
            st.send();
            st.tx = None;
            std::mem::take(&mut st.hash)
        };
        let _ = self.writer.await;
        hex::encode(hash.finalize())
    }
}

impl State {
    fn send(&mut self) {
        if self.buf.is_empty() {
            return;
        }
        let chunk = std::mem::take(&mut self.buf);
        self.hash.update(&chunk);
        if let Some(tx) = &self.tx {
            let _ = tx.send((self.seq, chunk));
        }
        self.seq += 1;
    }
}
