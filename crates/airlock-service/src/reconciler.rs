//! The reconciler: claims due work from the store (leases, `SKIP LOCKED` on
//! PostgreSQL) and converges providers with it — applies approved grants,
//! ends grants at `not_after`, removes revoked/failed ones, lapses stale
//! requests, and removes provider accounts no grant backs (drift). Intent is
//! in the store before each provider call; the outcome is recorded after.

use std::sync::Arc;
use std::time::Duration;

use airlock_core::audit_chain::AuditDraft;
use airlock_core::request::{GrantPhase, GrantStatus, Request, RequestState, Transition};
use airlock_core::Error;
use airlock_store::Change;
use serde_json::json;
use time::OffsetDateTime;

use crate::context::{Fault, Service};
use crate::lifecycle::{fmt_time, grant_spec, subject};
use crate::ServiceResult;

/// How long a claimed request stays ours before another replica may take it.
const LEASE: time::Duration = time::Duration::seconds(15);
/// Requests claimed per pass (and processed concurrently).
const BATCH: u32 = 64;
/// Provider attempts before an approved grant is declared failed.
const MAX_ATTEMPTS: u32 = 8;

fn backoff(attempts: u32) -> time::Duration {
    time::Duration::seconds(1i64 << attempts.min(6))
}

/// Runs until the service stops: claim, process, sleep until the next
/// deadline (≤ 1 s) or a wake-up. A pass in progress is finished first, so a
/// draining replica leaves no request leased to itself.
pub async fn run(app: Arc<Service>) {
    while !app.is_stopping() {
        let n = pass(&app).await;
        if n >= BATCH as usize {
            continue;
        }
        let next = app.db(|s| s.next_due()).await.ok().flatten();
        let now = app.now();
        let wait = match next {
            Some(t) if t > now => (t - now).unsigned_abs().min(Duration::from_secs(1)),
            // Due now but leased elsewhere (or just failed): do not spin.
            Some(_) => Duration::from_millis(50),
            None => Duration::from_secs(1),
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = app.wake.notified() => {}
            _ = app.stopped() => {}
        }
    }
}

/// One reconciler pass; returns how many requests were claimed.
pub async fn pass(app: &Arc<Service>) -> usize {
    let now = app.now();
    let owner = app.replica_id.clone();
    let claimed = match app
        .db(move |s| s.claim_work(now, &owner, LEASE, BATCH))
        .await
    {
        Ok(v) => v,
        Err(e) => {
            tracing::warn!(error = %e, "reconciler could not claim work; retrying");
            tokio::time::sleep(Duration::from_secs(1)).await;
            return 0;
        }
    };
    let n = claimed.len();
    let mut tasks = tokio::task::JoinSet::new();
    for r in claimed {
        tasks.spawn(process(app.clone(), r));
    }
    while tasks.join_next().await.is_some() {}
    n
}

async fn process(app: Arc<Service>, r: Request) {
    let now = app.now();
    let result = match (r.state, r.grant.phase) {
        (RequestState::Pending, _) => lapse(&app, &r).await,
        (RequestState::Approved, GrantPhase::Applying) => apply(&app, &r).await,
        (RequestState::Active, _) if r.not_after.is_some_and(|t| t <= now) => {
            expire(&app, &r).await
        }
        (_, GrantPhase::Removing) => remove(&app, &r).await,
        _ => release(&app, &r).await,
    };
    if let Err(e) = result {
        tracing::warn!(request = %r.id, error = %e, "reconciler step failed; it will be retried");
        let _ = release(&app, &r).await;
    }
}

async fn update(
    app: &Arc<Service>,
    r: &Request,
    decide: impl FnMut(&Request) -> Result<Change, Error> + Send + 'static,
) -> ServiceResult<Request> {
    let id = r.id.clone();
    let now = app.now();
    let mut decide = decide;
    app.db(move |s| s.update_request(&id, now, &mut decide))
        .await
}

async fn release(app: &Arc<Service>, r: &Request) -> ServiceResult<()> {
    update(app, r, |_| {
        Ok(Change {
            release_lease: true,
            ..Change::default()
        })
    })
    .await
    .map(|_| ())
}

async fn lapse(app: &Arc<Service>, r: &Request) -> ServiceResult<()> {
    update(app, r, |cur| {
        if cur.state != RequestState::Pending {
            return Ok(Change {
                release_lease: true,
                ..Change::default()
            });
        }
        Ok(Change {
            state: Some(cur.state.apply(Transition::Lapse)?),
            release_lease: true,
            audit: vec![AuditDraft::new(
                "request.lapsed",
                "system",
                subject(&cur.id),
                json!({}),
            )],
            ..Change::default()
        })
    })
    .await
    .map(|_| ())
}

fn retry_status(
    cur: &GrantStatus,
    phase: GrantPhase,
    err: &str,
    now: OffsetDateTime,
) -> GrantStatus {
    let attempts = cur.attempts + 1;
    GrantStatus {
        phase,
        attempts,
        last_error: Some(err.to_string()),
        next_attempt_at: Some(now + backoff(attempts)),
    }
}

async fn apply(app: &Arc<Service>, r: &Request) -> ServiceResult<()> {
    if let Some(start) = r.not_before.filter(|s| *s > app.now()) {
        // A scheduled grant claimed before its start (never through the due
        // query, which waits for it): it waits until then.
        update(app, r, move |cur| {
            Ok(Change {
                grant: Some(GrantStatus {
                    next_attempt_at: Some(start),
                    ..cur.grant.clone()
                }),
                release_lease: true,
                ..Change::default()
            })
        })
        .await?;
        return Ok(());
    }
    let spec = grant_spec(app, r)?;
    let ent = app.config.entitlement(r.entitlement.as_str())?;
    let provider = app.provider(&ent.provider)?;
    let pname = ent.provider.to_string();
    // A lock placed after the approval still stops the grant (fail closed).
    let locked = crate::locks::check_request(app, &r.requester, &r.entitlement)
        .await
        .err();
    let outcome = if let Some(e) = locked {
        Err((e.to_string(), false))
    } else if spec.not_after <= app.now() {
        Err((
            "the grant window ended before it could be applied".to_string(),
            false,
        ))
    } else {
        provider
            .apply(&spec)
            .await
            .map_err(|e| (e.to_string(), e.is_retryable()))
    };
    match outcome {
        Ok(()) => {
            if app.fault == Some(Fault::PauseAfterProviderApply) {
                tracing::warn!(request = %r.id, "fault injection: pausing after provider apply");
                tokio::time::sleep(Duration::from_secs(30)).await;
            }
            let na = spec.not_after;
            let updated = update(app, r, move |cur| {
                if cur.state != RequestState::Approved || cur.grant.phase != GrantPhase::Applying {
                    return Ok(Change { release_lease: true, ..Change::default() });
                }
                Ok(Change {
                    state: Some(cur.state.apply(Transition::Activate)?),
                    grant: Some(GrantStatus { phase: GrantPhase::Applied, attempts: 0, last_error: None, next_attempt_at: None }),
                    release_lease: true,
                    audit: vec![AuditDraft::new(
                        "grant.applied",
                        "system",
                        subject(&cur.id),
                        json!({"provider": pname, "not_after": fmt_time(na), "breakglass": cur.breakglass}),
                    )],
                    ..Change::default()
                })
            })
            .await?;
            if updated.state == RequestState::Active {
                let secs = (app.now() - updated.created_at).as_seconds_f64();
                app.metrics.request_to_active.observe(secs);
                app.metrics
                    .people
                    .active(updated.id.as_str(), updated.entitlement.as_str(), secs);
            }
            Ok(())
        }
        Err((err, retryable)) => {
            app.metrics.provider_error(&pname);
            tracing::warn!(request = %r.id, provider = %pname, error = %err, "grant apply failed");
            let now = app.now();
            update(app, r, move |cur| {
                if cur.state != RequestState::Approved || cur.grant.phase != GrantPhase::Applying {
                    return Ok(Change {
                        release_lease: true,
                        ..Change::default()
                    });
                }
                let in_window = cur
                    .not_after
                    .is_some_and(|t| t > now + backoff(cur.grant.attempts + 1));
                if retryable && cur.grant.attempts + 1 < MAX_ATTEMPTS && in_window {
                    return Ok(Change {
                        grant: Some(retry_status(&cur.grant, GrantPhase::Applying, &err, now)),
                        release_lease: true,
                        ..Change::default()
                    });
                }
                // Give up; remove whatever part of the grant may exist.
                Ok(Change {
                    state: Some(cur.state.apply(Transition::Fail)?),
                    grant: Some(GrantStatus {
                        phase: GrantPhase::Removing,
                        attempts: 0,
                        last_error: Some(err.clone()),
                        next_attempt_at: None,
                    }),
                    release_lease: true,
                    audit: vec![AuditDraft::new(
                        "grant.failed",
                        "system",
                        subject(&cur.id),
                        json!({"error": err}),
                    )],
                    ..Change::default()
                })
            })
            .await?;
            app.wake.notify_one();
            Ok(())
        }
    }
}

async fn expire(app: &Arc<Service>, r: &Request) -> ServiceResult<()> {
    let now = app.now();
    let updated = update(app, r, move |cur| {
        let due = cur.not_after.is_some_and(|t| t <= now);
        if cur.state != RequestState::Active || !due {
            return Ok(Change {
                release_lease: true,
                ..Change::default()
            });
        }
        let lag = cur
            .not_after
            .map(|t| (now - t).whole_milliseconds())
            .unwrap_or(0);
        Ok(Change {
            state: Some(cur.state.apply(Transition::Expire)?),
            grant: Some(GrantStatus {
                phase: GrantPhase::Removing,
                attempts: 0,
                last_error: None,
                next_attempt_at: None,
            }),
            audit: vec![AuditDraft::new(
                "request.expired",
                "system",
                subject(&cur.id),
                json!({"lag_ms": lag}),
            )],
            ..Change::default()
        })
    })
    .await?;
    if updated.state == RequestState::Expired && updated.grant.phase == GrantPhase::Removing {
        if let Some(t) = updated.not_after {
            app.metrics
                .reconciler_lag
                .observe((now - t).as_seconds_f64());
        }
        remove(app, &updated).await
    } else {
        Ok(())
    }
}

async fn remove(app: &Arc<Service>, r: &Request) -> ServiceResult<()> {
    let spec = grant_spec(app, r)?;
    let ent = app.config.entitlement(r.entitlement.as_str())?;
    let pname = ent.provider.to_string();
    let result = app.provider(&ent.provider)?.remove(&spec).await;
    let now = app.now();
    match result {
        Ok(()) => update(app, r, move |cur| {
            if cur.grant.phase != GrantPhase::Removing {
                return Ok(Change {
                    release_lease: true,
                    ..Change::default()
                });
            }
            Ok(Change {
                grant: Some(GrantStatus {
                    phase: GrantPhase::Removed,
                    attempts: 0,
                    last_error: None,
                    next_attempt_at: None,
                }),
                release_lease: true,
                audit: vec![AuditDraft::new(
                    "grant.removed",
                    "system",
                    subject(&cur.id),
                    json!({"provider": pname, "state": cur.state.as_str()}),
                )],
                ..Change::default()
            })
        })
        .await
        .map(|_| ()),
        Err(e) => {
            app.metrics.provider_error(&pname);
            tracing::warn!(request = %r.id, provider = %pname, error = %e, "grant removal failed; retrying with backoff");
            let err = e.to_string();
            update(app, r, move |cur| {
                Ok(Change {
                    grant: Some(retry_status(&cur.grant, GrantPhase::Removing, &err, now)),
                    release_lease: true,
                    ..Change::default()
                })
            })
            .await
            .map(|_| ())
        }
    }
}

/// Runs drift detection every `[server] drift_interval`.
pub async fn run_drift(app: Arc<Service>) {
    let every = Duration::from_secs(app.config.server.drift_interval.as_secs());
    loop {
        drift_once(&app).await;
        tokio::time::sleep(every).await;
    }
}

/// Removes provider accounts that look like airlock's but have no live grant,
/// and audits each removal. Returns the removed account names.
pub async fn drift_once(app: &Arc<Service>) -> Vec<String> {
    let mut removed = vec![];
    for d in crate::drift::report(app, None).await {
        if let Some(e) = &d.error {
            tracing::debug!(provider = %d.provider, error = %e, "drift check incomplete");
        }
        for s in &d.standing {
            tracing::warn!(provider = %d.provider, entitlement = %s.entitlement, principal = %s.principal,
                detail = %s.detail, "standing access outside airlock");
        }
        let name = &d.provider;
        let Some(provider) = app.providers.get(name) else {
            continue;
        };
        for acct in d.orphaned {
            // Audit before effect: if the intent cannot be recorded, do not touch the account.
            let subject = format!("provider:{name}");
            let data = json!({"account": acct.account, "request": acct.request_id});
            if let Err(e) = audit(
                app,
                AuditDraft::new("drift.detected", "system", subject.clone(), data.clone()),
            )
            .await
            {
                tracing::error!(error = %e, "could not audit drift; leaving the account alone");
                continue;
            }
            match provider.remove_account(&acct.account).await {
                Ok(()) => {
                    if let Err(e) = audit(
                        app,
                        AuditDraft::new("drift.removed", "system", subject, data),
                    )
                    .await
                    {
                        tracing::error!(error = %e, "could not audit drift removal");
                    }
                    app.metrics
                        .drift_removed
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    tracing::warn!(provider = %name, account = %acct.account, "removed access that no grant backs (drift)");
                    removed.push(acct.account);
                }
                Err(e) => {
                    app.metrics.provider_error(name.as_str());
                    tracing::warn!(provider = %name, account = %acct.account, error = %e, "drift removal failed");
                }
            }
        }
    }
    removed
}

async fn audit(app: &Arc<Service>, draft: AuditDraft) -> ServiceResult<()> {
    let now = app.now();
    app.db(move |s| s.append_audit(&[draft], now)).await
}
