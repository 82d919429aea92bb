//! Reviewing and cancelling runs: N of M approvals from the named reviewers,
//! never one's own, within the approval window; Cedar can narrow who reviews.

use std::sync::Arc;

use airlock_core::approval::Tally;
use airlock_core::audit_chain::AuditDraft;
use airlock_core::policy::{PolicyEngine, ProxyAction, ProxyContext, ProxyResource};
use airlock_core::request::{Review, ReviewDecision};
use airlock_core::run::{Run, RunId, RunState, RunTransition};
use airlock_core::{Error, Principal};
use airlock_store::RunChange;
use serde_json::json;

use super::create::ProxyError;
use super::execution::start;
use super::*;
use crate::lifecycle::check_comment;
use crate::Service;
use crate::ServiceError;

/// Approve or deny a pending run (N of M, never one's own, within its window).
pub async fn review(
    app: &Arc<Service>,
    who: &Principal,
    id: RunId,
    decision: ReviewDecision,
    comment: Option<String>,
    surface: crate::surface::Surface,
) -> Result<Run, ServiceError> {
    check_comment(&comment)?;
    let lookup = id.clone();
    let current = app
        .db(move |s| s.get_run(&lookup))
        .await?
        .ok_or_else(|| Error::not_found(format!("run `{id}`")))?;
    if current.requester == who.name {
        return Err(Error::forbidden(
            "you cannot review your own run; another reviewer must decide",
        )
        .into());
    }
    let rule = current.approvals.clone();
    let now = app.now();
    let named = rule.names_reviewer(who);
    let ctx = ProxyContext {
        reason: current.reason.clone(),
        mfa: who.mfa,
        hour: now.hour(),
        requester: Some(current.requester.to_string()),
        args: current.argv.iter().skip(1).cloned().collect(),
        params: current.params.clone().unwrap_or_default(),
        rule_action: "approve".into(),
    };
    let op = current
        .operation
        .as_ref()
        .and_then(|o| app.config.operations.get(o));
    let tool = app.config.tools.get(&current.tool);
    let resource = match (op, tool) {
        (Some(o), _) => ProxyResource::Operation(o),
        (None, Some(t)) => ProxyResource::Tool(t),
        (None, None) => {
            return Err(Error::Conflict {
                current_state: current.state.to_string(),
                message: format!("tool `{}` is no longer configured", current.tool),
            }
            .into())
        }
    };
    let d = app
        .policy
        .decide_proxy(who, ProxyAction::Review, resource, named, &ctx);
    if !d.allowed {
        let what = current
            .operation
            .as_ref()
            .map(|o| o.to_string())
            .unwrap_or_else(|| current.tool.to_string());
        let mut msg = PolicyEngine::explain_proxy_refusal(ProxyAction::Review, &what, &d);
        if !named {
            msg.push_str(&format!("; reviewers are: {}", rule.reviewers.join(", ")));
        }
        return Err(Error::forbidden(msg).into());
    }
    let review = Review {
        reviewer: who.name.clone(),
        decision,
        comment: comment.clone(),
        at: now,
    };
    let actor = who.name.to_string();
    let who2 = who.clone();
    let run = app
        .db(move |s| {
            s.update_run(&id, now, &mut |r, _| {
                if r.state != RunState::Pending {
                    return Err(Error::Conflict {
                        current_state: r.state.to_string(),
                        message: "only pending runs can be reviewed".into(),
                    });
                }
                if r.lapses_at.is_some_and(|t| t <= now) {
                    return Err(Error::Conflict {
                        current_state: "lapsed".into(),
                        message: "the approval window of this run has passed".into(),
                    });
                }
                rule.check_reviewer(&who2, r)?;
                let mut reviews = r.reviews.clone();
                reviews.push(review.clone());
                let sub = subject(&r.id);
                let mut audit = vec![AuditDraft::new(
                    "run.reviewed",
                    &actor,
                    sub.clone(),
                    json!({"decision": decision.as_str(), "comment": comment, "surface": surface.as_str()}),
                )];
                let mut change = RunChange {
                    review: Some(review.clone()),
                    ..RunChange::default()
                };
                match rule.tally_with(r, Some(&review)) {
                    Tally::Approved => {
                        change.state = Some(r.state.apply(RunTransition::Approve)?);
                        change.start_after = Some(start_after(now, r.detached));
                        audit.push(AuditDraft::new(
                            "run.approved",
                            &actor,
                            sub,
                            json!({"approvers": reviews.iter().filter(|v| v.decision == ReviewDecision::Approve)
                                .map(|v| v.reviewer.as_str()).collect::<Vec<_>>(), "argv": r.argv}),
                        ));
                    }
                    Tally::Denied => {
                        change.state = Some(r.state.apply(RunTransition::Deny)?);
                        audit.push(AuditDraft::new("run.denied", &actor, sub, json!({})));
                    }
                    Tally::Waiting { have, need } => {
                        audit[0].data["approvals"] = json!({"have": have, "need": need});
                    }
                }
                change.audit = audit;
                Ok(change)
            })
        })
        .await?;
    if run.state == RunState::Approved && run.detached {
        // Nobody waits to stream it: start it here now (the background loop would too).
        let id = run.id.clone();
        if let Err(ProxyError::Api(e)) = start(app, None, id, false).await {
            if !e.is_conflict() {
                tracing::warn!(run = %run.id, error = %e, "could not start an approved run; the background loop retries");
            }
        }
    }
    Ok(run)
}

/// Cancels a run: before it started it fails at once; while running, the
/// executor holding it kills its process group (here at once, on another
/// replica at its next lease renewal).
pub async fn cancel(
    app: &Arc<Service>,
    who: &Principal,
    id: RunId,
    comment: Option<String>,
) -> Result<Run, ServiceError> {
    check_comment(&comment)?;
    let now = app.now();
    let who2 = who.clone();
    let run = app
        .db(move |s| {
            s.update_run(&id, now, &mut |r, _| {
                let may = r.requester == who2.name
                    || who2.admin
                    || r.approvals.names_reviewer(&who2);
                if !may {
                    return Err(Error::forbidden(
                        "only the requester, a reviewer of this run or an admin can cancel it",
                    ));
                }
                let sub = subject(&r.id);
                let by = who2.name.to_string();
                let event = AuditDraft::new("run.cancelled", &by, sub.clone(), json!({"comment": comment, "state": r.state.as_str()}));
                match r.state {
                    RunState::Running => Ok(RunChange {
                        cancel_requested: Some(by.clone()),
                        audit: vec![event],
                        ..RunChange::default()
                    }),
                    _ => {
                        let state = r.state.apply(RunTransition::Abort)?;
                        let error = format!("cancelled by {by} before it ran");
                        Ok(RunChange {
                            state: Some(state),
                            finished_at: Some(now),
                            error: Some(error.clone()),
                            audit: vec![
                                event,
                                AuditDraft::new("run.finished", "system", sub, json!({"state": state.as_str(), "exit_code": null, "error": error})),
                            ],
                            ..RunChange::default()
                        })
                    }
                }
            })
        })
        .await?;
    if let Some(live) = app.proxy.get(&run.id) {
        live.cancel(who.name.as_str());
    }
    Ok(run)
}
