//! Locks, the kill switch incident responders ask for. A user lock revokes the
//! user's active grants, cancels their pending requests and runs and refuses
//! their tokens and sessions; an entitlement lock revokes its active grants
//! and refuses new requests. Locks live in the store, so they survive restarts
//! and hold on every replica; each replica re-reads them at most
//! [`LOCK_CACHE`] after a change elsewhere.

use std::sync::Arc;
use std::time::{Duration, Instant};

use airlock_core::audit_chain::AuditDraft;
use airlock_core::request::{RequestState, Transition};
use airlock_core::{EntitlementName, Error, Principal, Span, UserName};
use airlock_store::{Change, Lock, LockKind, RequestFilter, RunFilter};
use serde_json::json;

use crate::lifecycle::{fmt_time, subject};
use crate::Service;
use crate::ServiceError;

/// How long a replica trusts its copy of the locks table.
pub const LOCK_CACHE: Duration = Duration::from_millis(250);

/// Longest lock reason accepted.
const MAX_REASON_LEN: usize = 1024;

/// The replica's copy of the locks in force.
#[derive(Default)]
pub struct LockCache(tokio::sync::Mutex<Option<(Instant, Arc<Vec<Lock>>)>>);

impl LockCache {
    /// Forgets the copy, so the next check reads the store.
    pub async fn invalidate(&self) {
        *self.0.lock().await = None;
    }
}

pub use airlock_api::access::Enforcement;

/// Locks in force now (cached for [`LOCK_CACHE`]).
pub async fn in_force(app: &Arc<Service>) -> Result<Arc<Vec<Lock>>, ServiceError> {
    let mut slot = app.locks.0.lock().await;
    if let Some((at, locks)) = slot.as_ref() {
        if at.elapsed() < LOCK_CACHE {
            return Ok(locks.clone());
        }
    }
    let now = app.now();
    let locks = Arc::new(app.db_untracked(move |s| s.locks(now)).await?);
    *slot = Some((Instant::now(), locks.clone()));
    Ok(locks)
}

/// The lock on `name` of `kind`, if one holds.
pub async fn find(
    app: &Arc<Service>,
    kind: LockKind,
    name: &str,
) -> Result<Option<Lock>, ServiceError> {
    Ok(in_force(app)
        .await?
        .iter()
        .find(|l| l.kind == kind && l.name == name)
        .cloned())
}

/// The refusal a locked user or entitlement gets.
pub fn refusal(lock: &Lock) -> Error {
    Error::forbidden(format!(
        "locked: {} ({} `{}` was locked by {}; an admin can lift it with `airlock unlock {} {}`)",
        lock.reason,
        lock.kind.as_str(),
        lock.name,
        lock.created_by,
        lock.kind.as_str(),
        lock.name
    ))
}

/// Refuses a new request when its requester or entitlement is locked.
pub async fn check_request(
    app: &Arc<Service>,
    requester: &UserName,
    entitlement: &EntitlementName,
) -> Result<(), ServiceError> {
    let locks = in_force(app).await?;
    let hit = locks.iter().find(|l| {
        (l.kind == LockKind::User && l.name == requester.as_str())
            || (l.kind == LockKind::Entitlement && l.name == entitlement.as_str())
    });
    match hit {
        Some(l) => Err(refusal(l).into()),
        None => Ok(()),
    }
}

fn check_reason(reason: &str) -> Result<(), Error> {
    if reason.trim().is_empty() {
        return Err(Error::invalid(
            "reason",
            "a lock needs a reason (--reason \"INC-123: laptop stolen\")",
        ));
    }
    if reason.len() > MAX_REASON_LEN || reason.chars().any(char::is_control) {
        return Err(Error::invalid(
            "reason",
            format!("at most {MAX_REASON_LEN} bytes, no control characters"),
        ));
    }
    Ok(())
}

/// The canonical name of what is locked (user names are lowercased).
fn lock_name(app: &Service, kind: LockKind, name: &str) -> Result<String, Error> {
    match kind {
        LockKind::User => Ok(UserName::parse(name)?.to_string()),
        LockKind::Entitlement => Ok(app.config.entitlement(name)?.name.to_string()),
    }
}

/// `airlock lock KIND NAME --reason R [--for D]`: records the lock, then ends
/// what it covers.
pub async fn lock(
    app: &Arc<Service>,
    who: &Principal,
    kind: LockKind,
    name: &str,
    reason: &str,
    duration: Option<&str>,
) -> Result<(Lock, Enforcement), ServiceError> {
    if !who.admin {
        return Err(Error::forbidden("only admins can lock users and entitlements").into());
    }
    let name = lock_name(app, kind, name)?;
    check_reason(reason)?;
    if kind == LockKind::User && name == who.name.as_str() {
        return Err(Error::forbidden("you cannot lock yourself out; ask another admin").into());
    }
    let now = app.now();
    let expires_at = duration
        .map(|d| {
            d.parse::<Span>()
                .map(|s| now + s.to_time())
                .map_err(|e| Error::invalid("for", e.to_string()))
        })
        .transpose()?;
    let lock = Lock {
        kind,
        name: name.clone(),
        reason: reason.to_string(),
        created_by: who.name.to_string(),
        created_at: now,
        expires_at,
    };
    let audit = AuditDraft::new(
        "lock.created",
        who.name.as_str(),
        format!("{}:{name}", kind.as_str()),
        json!({"reason": reason, "expires_at": expires_at.map(fmt_time)}),
    );
    let stored = lock.clone();
    app.db(move |s| s.put_lock(&stored, &audit, now)).await?;
    app.locks.invalidate().await;
    tracing::warn!(target: "airlock::lock", kind = kind.as_str(), name = %name, by = %who.name, reason, "LOCK placed");
    let done = enforce(app, who, &lock).await?;
    Ok((lock, done))
}

/// Ends what a fresh lock covers: active grants, pending requests, runs.
async fn enforce(
    app: &Arc<Service>,
    who: &Principal,
    lock: &Lock,
) -> Result<Enforcement, ServiceError> {
    let mut done = Enforcement::default();
    let mut filter = RequestFilter {
        limit: 1000,
        ..Default::default()
    };
    match lock.kind {
        LockKind::User => filter.requester = Some(UserName::parse(&lock.name)?),
        LockKind::Entitlement => filter.entitlements = Some(vec![lock.name.clone()]),
    }
    let mut targets = Vec::new();
    for state in [RequestState::Active, RequestState::Pending] {
        if lock.kind == LockKind::Entitlement && state == RequestState::Pending {
            continue;
        }
        let mut f = filter.clone();
        f.state = Some(state);
        targets.extend(app.db_untracked(move |s| s.list_requests(&f)).await?);
    }
    let actor = who.name.to_string();
    for r in targets {
        let reason = lock.reason.clone();
        let lock_subject = format!("{}:{}", lock.kind.as_str(), lock.name);
        let actor = actor.clone();
        let id = r.id.clone();
        let now = app.now();
        let outcome = app
            .db(move |s| {
                s.update_request(&id, now, &mut |cur| {
                    let (transition, kind) = match cur.state {
                        RequestState::Active => (Transition::Revoke, "request.revoked"),
                        RequestState::Pending => (Transition::Withdraw, "request.withdrawn"),
                        _ => return Ok(Change::default()),
                    };
                    let mut change = Change {
                        state: Some(cur.state.apply(transition)?),
                        audit: vec![AuditDraft::new(
                            kind,
                            &actor,
                            subject(&cur.id),
                            json!({"comment": format!("locked: {reason}"), "lock": lock_subject, "breakglass": cur.breakglass}),
                        )],
                        ..Change::default()
                    };
                    if transition == Transition::Revoke {
                        change.grant = Some(airlock_core::request::GrantStatus {
                            phase: airlock_core::GrantPhase::Removing,
                            attempts: 0,
                            last_error: None,
                            next_attempt_at: None,
                        });
                    }
                    Ok(change)
                })
            })
            .await;
        match outcome {
            Ok(after) if after.state == RequestState::Revoked => {
                done.revoked.push(after.id.to_string())
            }
            Ok(after) if after.state == RequestState::Withdrawn => {
                done.withdrawn.push(after.id.to_string())
            }
            Ok(_) => {}
            // Another replica or the reconciler moved it meanwhile (expired, say): nothing left to end.
            Err(e) if e.is_conflict() => {}
            Err(e) => return Err(e),
        }
    }
    if !done.revoked.is_empty() {
        app.wake.notify_one();
    }
    if lock.kind == LockKind::User {
        let requester = UserName::parse(&lock.name)?;
        let runs = app
            .db_untracked(move |s| {
                s.list_runs(&RunFilter {
                    requester: Some(requester),
                    limit: 1000,
                    ..Default::default()
                })
            })
            .await?;
        for run in runs.into_iter().filter(|r| !r.state.is_terminal()) {
            let comment = Some(format!("locked: {}", lock.reason));
            match crate::proxy::review::cancel(app, who, run.id.clone(), comment).await {
                Ok(_) => done.cancelled_runs.push(run.id.to_string()),
                Err(e) if e.is_conflict() => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(done)
}

/// `airlock unlock KIND NAME`.
pub async fn unlock(
    app: &Arc<Service>,
    who: &Principal,
    kind: LockKind,
    name: &str,
) -> Result<(), ServiceError> {
    if !who.admin {
        return Err(Error::forbidden("only admins can lift locks").into());
    }
    let name = match kind {
        LockKind::User => UserName::parse(name)?.to_string(),
        LockKind::Entitlement => EntitlementName::parse(name)?.to_string(),
    };
    let audit = AuditDraft::new(
        "lock.removed",
        who.name.as_str(),
        format!("{}:{name}", kind.as_str()),
        json!({}),
    );
    let now = app.now();
    let n = name.clone();
    let removed = app
        .db(move |s| s.remove_lock(kind, &n, &audit, now))
        .await?;
    app.locks.invalidate().await;
    if !removed {
        return Err(Error::not_found(format!(
            "lock on {} `{name}` (see `airlock lock list`)",
            kind.as_str()
        ))
        .into());
    }
    Ok(())
}
