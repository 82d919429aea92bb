//! The proxy's background loop (every replica runs one): lapses runs nobody
//! approved in time, starts approved runs nobody is waiting to stream, and
//! records runs whose executor died as failed. Each step re-checks the run
//! under its row lock, so replicas never act on one run twice.

use std::sync::Arc;
use std::time::Duration;

use crate::Service;

/// Runs due per pass.
const BATCH: u32 = 64;
/// Longest sleep between passes.
const TICK: Duration = Duration::from_secs(1);

/// Runs until the service stops (the pass in progress is finished first).
pub async fn run(app: Arc<Service>) {
    while !app.is_stopping() {
        let now = app.now();
        match app.db(move |s| s.due_runs(now, BATCH)).await {
            Ok(ids) => {
                for id in ids {
                    super::execution::tend(&app, id).await;
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "proxy loop could not list due runs; retrying")
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(TICK) => {}
            _ = app.proxy.wake.notified() => {}
            _ = app.stopped() => {}
        }
    }
}
