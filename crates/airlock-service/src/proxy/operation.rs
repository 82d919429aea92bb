//! Operation runs: validated parameters, policy, rate limit, then the dry
//! run (its output is stored on the run, next to the exact argv, for
//! reviewers); operations without approvals start once the dry run passed.

use std::collections::BTreeMap;
use std::sync::Arc;

use airlock_core::approval::ApprovalRule;
use airlock_core::audit_chain::AuditDraft;
use airlock_core::operation::Operation;
use airlock_core::policy::{ProxyAction, ProxyContext, ProxyResource};
use airlock_core::rate::{retry_after_secs, Rate, RateDecision};
use airlock_core::run::{DryRun, RunState, RunTransition};
use airlock_core::tool::Tool;
use airlock_core::{Error, OperationName, Principal};
use airlock_store::{RateCheck, RateEvent, RunChange};
use serde_json::json;
use time::OffsetDateTime;

use super::create::{
    base_run, check_reason, decide_or_refuse, store_new, Created, Draft, ProxyError, RateLimited,
};
use super::execution::{job_for, start};
use super::executor::{self, Sinks};
use super::*;
use crate::lifecycle::fmt_time;
use crate::Service;
use crate::ServiceError;

/// Dry-run output kept on the run for reviewers.
const DRY_RUN_CAP: usize = 64 * 1024;

/// Body of `POST /api/v1/operations/{name}/runs`.
#[derive(Debug, Clone)]
pub struct OperationInput {
    pub params: BTreeMap<String, String>,
    pub reason: String,
    pub attach: bool,
    /// Only run the dry run; create nothing.
    pub dry_run_only: bool,
}

/// The operation, or a 404.
pub fn operation<'a>(app: &'a Service, name: &str) -> Result<&'a Operation, Error> {
    OperationName::parse(name)
        .ok()
        .and_then(|n| app.config.operations.get(&n))
        .ok_or_else(|| {
            Error::not_found(format!(
                "operation `{}` (list them with `airlock operation list`)",
                name.chars().take(64).collect::<String>()
            ))
        })
}

/// Runs a dry run to its end and describes it for reviewers.
async fn dry_run(app: &Service, op: &Operation, tool: &Tool, argv: &[String]) -> DryRun {
    let mut job = job_for(app, tool, Some(&op.name), argv);
    job.cap = job.cap.min(DRY_RUN_CAP);
    let (_keep, cancel) = tokio::sync::watch::channel(None);
    let o = executor::execute(
        &job,
        Sinks {
            client: None,
            live: None,
        },
        cancel,
    )
    .await;
    DryRun {
        argv: argv.to_vec(),
        exit_code: o.exit_code,
        output: String::from_utf8_lossy(&o.transcript.bytes).into_owned(),
        output_sha256: o.transcript.sha256.clone(),
        truncated: o.transcript.truncated,
        error: o.error(job.timeout),
    }
}

/// Counts a dry run against the operation's rate limit, with its intent
/// audit in the same transaction; beyond the limit it is refused (429, the
/// refusal audited) and nothing runs.
async fn count_dry_run(
    app: &Arc<Service>,
    who: &Principal,
    op: &Operation,
    rate: Rate,
    intent: AuditDraft,
    now: OffsetDateTime,
) -> Result<(), ProxyError> {
    let check = RateCheck {
        principal: who.name.clone(),
        key: op.rate_key(),
        rate,
    };
    // Marks the event in `rate_events.run_id`; never a real run's id.
    let marker = format!("dry-run:{}", new_run_id());
    let rule = format!("operation {}", op.name);
    let refused = Arc::new(std::sync::Mutex::new(None));
    let seen = refused.clone();
    let (actor, sub) = (who.name.to_string(), format!("operation:{}", op.name));
    let counted = app
        .db(move |s| {
            s.record_rate_event(
                &check,
                &marker,
                now,
                &mut |recent| match rate.decide(recent, now) {
                    RateDecision::Allow => RateEvent {
                        count: true,
                        audit: vec![intent.clone()],
                    },
                    RateDecision::Refuse { next_allowed_at } => {
                        *seen.lock().unwrap_or_else(|p| p.into_inner()) = Some(next_allowed_at);
                        RateEvent {
                            count: false,
                            audit: vec![AuditDraft::new(
                                "operation.dry_run.rate_limited",
                                &actor,
                                sub.clone(),
                                json!({"marker": marker, "limit": rate.to_string(),
                                       "next_allowed_at": fmt_time(next_allowed_at)}),
                            )],
                        }
                    }
                },
            )
        })
        .await?;
    if counted {
        return Ok(());
    }
    let next = refused
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .unwrap_or(now);
    Err(ProxyError::RateLimited(Box::new(RateLimited {
        rule,
        rate,
        next_allowed_at: next,
        retry_after: retry_after_secs(now, next),
        run: None,
    })))
}

/// `airlock operation run`: validate parameters, check policy and the rate
/// limit, run the dry run (reviewers see it next to the argv), then wait for
/// approvals or run.
pub async fn run_operation(
    app: &Arc<Service>,
    who: &Principal,
    name: &str,
    input: OperationInput,
) -> Result<Created, ProxyError> {
    let op = operation(app, name)?;
    let tool = app.config.tools.get(&op.tool).ok_or_else(|| {
        ServiceError::internal(format!("operation {} names a missing tool", op.name))
    })?;
    check_reason(&input.reason)?;
    let prepared = op.prepare(tool, &input.params)?;
    let now = app.now();
    let ctx = ProxyContext {
        reason: input.reason.clone(),
        mfa: who.mfa,
        hour: now.hour(),
        requester: None,
        args: prepared.argv[1..].to_vec(),
        params: prepared.params.clone(),
        rule_action: if op.approvals.count > 0 {
            "approve"
        } else {
            "allow"
        }
        .into(),
    };
    let d = decide_or_refuse(
        app,
        who,
        ProxyAction::Operation,
        ProxyResource::Operation(op),
        &ctx,
        format!("operation:{}", op.name),
        json!({"params": prepared.params}),
    )
    .await?;
    if input.dry_run_only {
        let Some(argv) = &prepared.dry_run_argv else {
            return Err(Error::invalid(
                "dry_run",
                format!("operation `{}` has no dry_run_args", op.name),
            )
            .into());
        };
        // Audited before it executes (a dry run still runs a program): if the
        // event cannot be written, nothing runs. Its outcome follows.
        let sub = format!("operation:{}", op.name);
        let intent = AuditDraft::new(
            "operation.dry_run",
            who.name.as_str(),
            sub.clone(),
            json!({"argv": argv, "params": prepared.params, "would_run": prepared.argv}),
        );
        let at = app.now();
        match op.rate {
            // Counted like a run (same pair, same window): a dry run executes too.
            Some(rate) => count_dry_run(app, who, op, rate, intent, at).await?,
            None => app.db(move |s| s.append_audit(&[intent], at)).await?,
        }
        let dr = dry_run(app, op, tool, argv).await;
        let outcome = AuditDraft::new(
            "operation.dry_run.finished",
            "system",
            sub,
            json!({"exit_code": dr.exit_code, "output_sha256": dr.output_sha256,
                   "truncated": dr.truncated, "error": dr.error}),
        );
        let at = app.now();
        app.db(move |s| s.append_audit(&[outcome], at)).await?;
        return Ok(Created::DryRunOnly(crate::views::dry_run_preview(
            &op.name, &prepared, &dr,
        )));
    }
    let mut run = base_run(
        who,
        tool,
        prepared.argv.clone(),
        &input.reason,
        format!("operation {}", op.name),
        {
            let rule = app.approval_rule(&op.approvals, op.service.as_ref());
            ApprovalRule {
                count: rule.count,
                reviewers: rule.reviewers,
            }
        },
        now,
    );
    let id = run.id.clone();
    let sub = subject(&id);
    run.operation = Some(op.name.clone());
    run.params = Some(prepared.params.clone());
    run.detached = !input.attach;
    run.lapses_at = Some(now + op.approval_timeout.to_time());
    let audit = vec![AuditDraft::new(
        "run.created",
        who.name.as_str(),
        sub.clone(),
        json!({"tool": tool.name, "argv": run.argv, "operation": op.name, "params": prepared.params,
               "rule": run.rule, "reason": input.reason, "approvals": run.approvals,
               "dry_run_argv": prepared.dry_run_argv, "policies": d.policies}),
    )];
    let stored = store_new(
        app,
        Draft {
            rate: op
                .rate
                .map(|r| (r, op.rate_key(), format!("operation {}", op.name))),
            run,
            run_now: false,
            audit,
        },
    )
    .await?;
    let auto = op.approvals.count == 0;
    let dry = match &prepared.dry_run_argv {
        Some(argv) => Some(dry_run(app, op, tool, argv).await),
        None => None,
    };
    if dry.is_none() && !auto {
        return Ok(Created::Stored(stored));
    }
    let at = app.now();
    let actor = who.name.to_string();
    let detached = stored.detached;
    let run = app
        .db(move |s| {
            s.update_run(&id, at, &mut |r, _| {
                if r.state != RunState::Pending {
                    return Ok(RunChange::default());
                }
                let mut change = RunChange::default();
                if let Some(dr) = &dry {
                    change.audit.push(AuditDraft::new(
                        "run.dry_run",
                        &actor,
                        sub.clone(),
                        json!({"argv": dr.argv, "exit_code": dr.exit_code, "output_sha256": dr.output_sha256,
                               "truncated": dr.truncated, "error": dr.error}),
                    ));
                    change.dry_run = Some(dr.clone());
                    if dr.exit_code != Some(0) {
                        change.state = Some(r.state.apply(RunTransition::Abort)?);
                        change.error = Some(format!(
                            "the dry run failed ({}); nothing else ran",
                            dr.error.clone().unwrap_or_else(|| format!(
                                "exit {}",
                                dr.exit_code.map(|c| c.to_string()).unwrap_or_else(|| "unknown".into())
                            ))
                        ));
                        change.finished_at = Some(at);
                        change.audit.push(AuditDraft::new(
                            "run.finished",
                            "system",
                            sub.clone(),
                            json!({"state": "failed", "exit_code": null, "error": change.error}),
                        ));
                        return Ok(change);
                    }
                }
                if auto {
                    change.state = Some(r.state.apply(RunTransition::Approve)?);
                    change.start_after = Some(start_after(at, detached));
                    change.audit.push(AuditDraft::new(
                        "run.approved",
                        "system",
                        sub.clone(),
                        json!({"auto": true}),
                    ));
                }
                Ok(change)
            })
        })
        .await?;
    if run.state == RunState::Approved {
        return start(app, None, run.id.clone(), input.attach).await;
    }
    Ok(Created::Stored(run))
}
