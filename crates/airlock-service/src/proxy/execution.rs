//! Executing runs exactly once: a run moves `approved → running` only in a
//! store transaction that records this replica's lease; the lease is renewed
//! while the program runs and the end (exit code, transcript, its hash) is
//! recorded with the `run.finished` event. Background duties (lapse, start,
//! abandoned runs) re-check each run under its row lock.

use std::sync::{Arc, Mutex};

use airlock_core::audit_chain::AuditDraft;
use airlock_core::run::{Run, RunId, RunState, RunTransition};
use airlock_core::tool::Tool;
use airlock_core::{Error, Principal};
use airlock_store::{LeaseChange, RunChange};
use bytes::Bytes;
use serde_json::json;
use tokio::sync::mpsc;

use super::create::{Created, ProxyError};
use super::executor::{self, Ending, Job, Outcome, Sinks};
use super::frames::{json_frame, Kind};
use super::*;
use crate::Service;
use crate::ServiceError;

/// Frames buffered towards an attached client.
const CLIENT_BUFFER: usize = 32;

/// What to execute for `argv` of `tool` (its environment, timeout, cap and
/// user; an operation's own `run_as` wins over the tool's).
pub(super) fn job_for(
    app: &Service,
    tool: &Tool,
    operation: Option<&airlock_core::OperationName>,
    argv: &[String],
) -> Job {
    Job {
        argv: argv.to_vec(),
        env: tool.env.clone(),
        timeout: std::time::Duration::from_secs(tool.timeout.as_secs()),
        cap: tool.transcript_cap as usize,
        run_as: app.proxy.run_as(&tool.name, operation),
    }
}

/// The `run.started` audit event, naming the executing replica.
pub(super) fn started_event(actor: &str, sub: &str, replica: &str) -> AuditDraft {
    AuditDraft::new(
        "run.started",
        actor,
        sub.to_string(),
        json!({"executor": replica}),
    )
}

/// Claims an approved run for this replica (approved → running, exactly
/// once) and executes it. With `who`, only the run's requester may start it.
/// Refuses to start another run when this replica already executes
/// `[server] max_concurrent_runs` (each holds a process and its output).
pub fn check_capacity(app: &Service) -> Result<(), ServiceError> {
    let max = app.config.server.max_concurrent_runs as usize;
    if app.proxy.running() >= max {
        return Err(ServiceError::Busy {
            message: format!(
                    "this server already executes {max} runs ([server] max_concurrent_runs); retry in a few seconds"
                ),
            retry_after: 5,
        });
    }
    Ok(())
}

pub async fn start(
    app: &Arc<Service>,
    who: Option<&Principal>,
    id: RunId,
    attach: bool,
) -> Result<Created, ProxyError> {
    check_capacity(app)?;
    let now = app.now();
    let replica = app.replica_id.clone();
    let requester = who.map(|p| p.name.clone());
    let actor = who
        .map(|p| p.name.to_string())
        .unwrap_or_else(|| "system".into());
    let run = app
        .db(move |s| {
            s.update_run(&id, now, &mut |r, lease| {
                if let Some(req) = &requester {
                    if &r.requester != req {
                        return Err(Error::forbidden(
                            "only the requester can start a run; others can follow it with GET /api/v1/runs/{id}/stream",
                        ));
                    }
                }
                if r.state == RunState::Approved && lease.until.is_some_and(|u| u > now) {
                    return Err(Error::Conflict {
                        current_state: r.state.to_string(),
                        message: "another executor is starting this run".into(),
                    });
                }
                Ok(RunChange {
                    state: Some(r.state.apply(RunTransition::Start)?),
                    started_at: Some(now),
                    lease: Some(LeaseChange::Hold(replica.clone(), lease_until(now))),
                    audit: vec![started_event(&actor, &subject(&r.id), &replica)],
                    ..RunChange::default()
                })
            })
        })
        .await?;
    let tool = app.config.tools.get(&run.tool).cloned();
    match tool {
        Some(t) => Ok(spawn_claimed(app, run, &t, attach)),
        None => Ok(Created::Stored(fail_unconfigured(app, &run).await?)),
    }
}

/// Records a claimed run whose tool left the catalog as not started: the
/// catalog changed under an approved run, so fail it, never guess.
async fn fail_unconfigured(app: &Arc<Service>, run: &Run) -> Result<Run, ServiceError> {
    let o = Outcome {
        ending: Ending::NotStarted(format!(
            "tool `{}` is no longer configured; nothing ran",
            run.tool
        )),
        exit_code: None,
        transcript: empty_transcript(),
    };
    finish(app, &run.id, &o, std::time::Duration::ZERO).await
}

/// Executes a run this replica holds (state `running`, our lease) in the
/// background; with `attach`, its output also flows to the returned receiver.
pub(super) fn spawn_claimed(app: &Arc<Service>, run: Run, tool: &Tool, attach: bool) -> Created {
    let job = job_for(app, tool, run.operation.as_ref(), &run.argv);
    let (tx, rx) = mpsc::channel(CLIENT_BUFFER);
    let client = attach.then_some(tx);
    let app2 = app.clone();
    let run2 = run.clone();
    tokio::spawn(async move { execute_claimed(app2, run2, job, client).await });
    if attach {
        Created::Attached { run, frames: rx }
    } else {
        Created::Stored(run)
    }
}

async fn execute_claimed(
    app: Arc<Service>,
    run: Run,
    job: Job,
    client: Option<mpsc::Sender<Bytes>>,
) {
    let live = app.proxy.register(&run.id, job.cap);
    if let Some(tx) = &client {
        let _ = tx
            .send(json_frame(Kind::Start, &crate::views::run_view(&run)))
            .await;
    }
    let renewer = tokio::spawn(renew(app.clone(), run.id.clone(), live.clone()));
    let outcome = executor::execute(
        &job,
        Sinks {
            client: client.clone(),
            live: Some(&live),
        },
        live.cancelled(),
    )
    .await;
    renewer.abort();
    let finished = finish(&app, &run.id, &outcome, job.timeout).await;
    app.proxy.remove(&run.id);
    drop(live);
    match (&client, finished) {
        (Some(tx), Ok(r)) => {
            let _ = tx
                .send(json_frame(Kind::End, &crate::views::run_view(&r)))
                .await;
        }
        (Some(tx), Err(e)) => {
            let _ = tx
                .send(json_frame(Kind::Error, &{
                    let a = e.answer();
                    json!({"status": a.status, "detail": a.detail})
                }))
                .await;
        }
        (None, Err(e)) => {
            tracing::error!(run = %run.id, error = %e, "could not record the end of a run");
        }
        (None, Ok(_)) => {}
    }
}

/// Keeps our lease on a running run and notices cancel requests made on any replica.
async fn renew(app: Arc<Service>, id: RunId, live: Arc<super::hub::LiveRun>) {
    loop {
        tokio::time::sleep(RENEW_EVERY).await;
        let now = app.now();
        let me = app.replica_id.clone();
        let seen: Arc<Mutex<Option<String>>> = Arc::default();
        let seen2 = seen.clone();
        let id2 = id.clone();
        let r = app
            .db(move |s| {
                s.update_run(&id2, now, &mut |r, lease| {
                    still_held(r, lease, &me)?;
                    *seen2.lock().unwrap_or_else(|p| p.into_inner()) =
                        lease.cancel_requested.clone();
                    Ok(RunChange {
                        lease: Some(LeaseChange::Hold(me.clone(), lease_until(now))),
                        ..RunChange::default()
                    })
                })
            })
            .await;
        match r {
            Ok(_) => {
                if let Some(by) = seen.lock().unwrap_or_else(|p| p.into_inner()).clone() {
                    live.cancel(&by);
                }
            }
            Err(e) if e.is_conflict() => {
                live.cancel(
                    "airlock (the run's lease was lost: another replica recorded it as failed)",
                );
                return;
            }
            Err(e) => {
                tracing::warn!(run = %id, error = %e, "could not renew a run's lease; retrying");
            }
        }
    }
}

/// Records how a run ended (our lease required), with the transcript and
/// its hash in the same transaction as the `run.finished` event. Retries
/// while the database is unavailable.
async fn finish(
    app: &Arc<Service>,
    id: &RunId,
    o: &Outcome,
    timeout: std::time::Duration,
) -> Result<Run, ServiceError> {
    let error = o.error(timeout);
    let mut attempt = 0;
    loop {
        let now = app.now();
        let me = app.replica_id.clone();
        let (o2, error2, id2) = (o.clone(), error.clone(), id.clone());
        let r = app
            .db(move |s| {
                s.update_run(&id2, now, &mut |r, lease| {
                    still_held(r, lease, &me)?;
                    let t = match &o2.ending {
                        Ending::Exited(0) => RunTransition::Succeed,
                        Ending::TimedOut => RunTransition::TimeOut,
                        _ => RunTransition::Fail,
                    };
                    let state = r.state.apply(t)?;
                    let tr = &o2.transcript;
                    Ok(RunChange {
                        state: Some(state),
                        finished_at: Some(now),
                        exit_code: o2.exit_code,
                        error: error2.clone(),
                        transcript: Some(tr.clone()),
                        lease: Some(LeaseChange::Release),
                        audit: vec![AuditDraft::new(
                            "run.finished",
                            "system",
                            subject(&r.id),
                            json!({"state": state.as_str(), "exit_code": o2.exit_code,
                                   "transcript_sha256": tr.sha256, "transcript_bytes": tr.bytes.len(),
                                   "output_bytes": tr.output_bytes, "truncated": tr.truncated,
                                   "error": error2, "executor": me}),
                        )],
                        ..RunChange::default()
                    })
                })
            })
            .await;
        match r {
            Ok(run) => return Ok(run),
            Err(e) if e.is_unavailable() && attempt < 10 => {
                attempt += 1;
                tokio::time::sleep(std::time::Duration::from_millis(500 << attempt.min(4))).await;
            }
            Err(e) => return Err(e),
        }
    }
}

/// Background duties for one due run: lapse it, start it, or record that its
/// executor died (never re-run: it may have had effects).
pub async fn tend(app: &Arc<Service>, id: RunId) {
    let now = app.now();
    let replica = app.replica_id.clone();
    let id2 = id.clone();
    let claimed = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let claimed2 = claimed.clone();
    let r = app
        .db(move |s| {
            s.update_run(&id2, now, &mut |r, lease| {
                let sub = subject(&r.id);
                claimed2.store(false, std::sync::atomic::Ordering::SeqCst);
                match r.state {
                    RunState::Pending if r.lapses_at.is_some_and(|t| t <= now) => Ok(RunChange {
                        state: Some(r.state.apply(RunTransition::Lapse)?),
                        error: Some("nobody approved it within its approval window".into()),
                        audit: vec![AuditDraft::new("run.lapsed", "system", sub, json!({}))],
                        ..RunChange::default()
                    }),
                    RunState::Approved
                        if lease.start_after.is_some_and(|t| t <= now)
                            && lease.until.is_none_or(|u| u <= now) =>
                    {
                        claimed2.store(true, std::sync::atomic::Ordering::SeqCst);
                        Ok(RunChange {
                            state: Some(r.state.apply(RunTransition::Start)?),
                            started_at: Some(now),
                            lease: Some(LeaseChange::Hold(replica.clone(), lease_until(now))),
                            audit: vec![started_event("system", &sub, &replica)],
                            ..RunChange::default()
                        })
                    }
                    RunState::Running if lease.until.is_some_and(|u| u <= now) => {
                        let error = format!(
                            "the server executing it ({}) stopped before the run finished; it was not re-run \
                             (it may have had effects, and a killed server's program may have run on): \
                             check the target and start a new run if needed",
                            lease.owner.as_deref().unwrap_or("unknown")
                        );
                        Ok(RunChange {
                            state: Some(r.state.apply(RunTransition::Fail)?),
                            finished_at: Some(now),
                            error: Some(error.clone()),
                            lease: Some(LeaseChange::Release),
                            audit: vec![AuditDraft::new(
                                "run.finished",
                                "system",
                                sub,
                                json!({"state": "failed", "exit_code": null, "abandoned": true, "error": error,
                                       "executor": lease.owner}),
                            )],
                            ..RunChange::default()
                        })
                    }
                    _ => Ok(RunChange::default()),
                }
            })
        })
        .await;
    match r {
        Ok(run) if claimed.load(std::sync::atomic::Ordering::SeqCst) => {
            match app.config.tools.get(&run.tool).cloned() {
                Some(t) => {
                    spawn_claimed(app, run, &t, false);
                }
                None => {
                    let _ = fail_unconfigured(app, &run).await;
                }
            }
        }
        Ok(_) => {}
        Err(e) => {
            tracing::warn!(run = %id, error = %e, "background step on a run failed; it will be retried")
        }
    }
}

/// Refuses to touch a run this replica no longer holds (its lease ran out and
/// another replica recorded it).
fn still_held(r: &Run, lease: &airlock_store::RunLease, me: &str) -> Result<(), Error> {
    if r.state != RunState::Running || lease.owner.as_deref() != Some(me) {
        return Err(Error::Conflict {
            current_state: r.state.to_string(),
            message: "this replica no longer holds the run".into(),
        });
    }
    Ok(())
}
