//! Creating runs: `airlock exec` (rule match, policy, rate limit) and
//! operations (validated parameters, policy, rate limit, dry run). The store
//! writes the run, its rate-limit event and audit events in one transaction.

use std::collections::BTreeMap;
use std::sync::Arc;

use airlock_core::approval::ApprovalRule;
use airlock_core::audit_chain::AuditDraft;
use airlock_core::config::ReasonRule;
use airlock_core::param::display_value;
use airlock_core::policy::{PolicyEngine, ProxyAction, ProxyContext, ProxyResource};
use airlock_core::rate::{human_secs, retry_after_secs, Rate, RateDecision};
use airlock_core::run::{Run, RunState, RunTransition};
use airlock_core::tool::{check_exec_args, RuleAction, Tool};
use airlock_core::{Error, Principal, ToolName};
use airlock_store::{NewRun, RateCheck};
use bytes::Bytes;
use serde_json::json;
use time::OffsetDateTime;
use tokio::sync::mpsc;

use super::execution::{spawn_claimed, started_event};
use super::*;
use crate::lifecycle::fmt_time;
use crate::Service;
use crate::ServiceError;

/// A refusal at the rate limit: HTTP 429 with `Retry-After`.
#[derive(Debug, Clone)]
pub struct RateLimited {
    /// The rule or operation whose limit was hit, in words.
    pub rule: String,
    pub rate: Rate,
    pub next_allowed_at: OffsetDateTime,
    pub retry_after: u64,
    /// The `rate_limited` run that records the refusal (none for a dry run,
    /// whose refusal is an audit event).
    pub run: Option<Run>,
}

impl RateLimited {
    /// `rate limit: 5 per 10m, next allowed in 4m12s`.
    pub fn message(&self) -> String {
        format!(
            "rate limit: {}, next allowed in {} ({})",
            self.rate,
            human_secs(self.retry_after),
            self.rule
        )
    }
}

/// What can go wrong creating or moving a run.
#[derive(Debug)]
pub enum ProxyError {
    Api(ServiceError),
    RateLimited(Box<RateLimited>),
}

impl<E: Into<ServiceError>> From<E> for ProxyError {
    fn from(e: E) -> Self {
        ProxyError::Api(e.into())
    }
}

/// What creating (or starting) a run produced.
pub enum Created {
    /// Running in this process; its output streams through `frames`.
    Attached {
        run: Run,
        frames: mpsc::Receiver<Bytes>,
    },
    /// Stored (pending, or running without a client attached).
    Stored(Run),
    /// Only an operation's dry run ran: what would run and what the dry run said.
    DryRunOnly(airlock_api::runs::DryRunPreview),
}

/// Body of `POST /api/v1/runs`.
#[derive(Debug, Clone)]
pub struct ExecInput {
    pub tool: String,
    pub args: Vec<String>,
    pub reason: String,
    /// Stream the output in the response when it runs at once.
    pub attach: bool,
}

/// A run's reason: bounded, one line (no catalog pattern applies to runs).
pub(super) fn check_reason(reason: &str) -> Result<(), Error> {
    ReasonRule {
        required: false,
        pattern: None,
    }
    .check(reason)
}

/// The tool, or a 404 that lists the configured ones.
pub fn tool<'a>(app: &'a Service, name: &str) -> Result<&'a Tool, Error> {
    ToolName::parse(name)
        .ok()
        .and_then(|n| app.config.tools.get(&n))
        .ok_or_else(|| {
            let known: Vec<&str> = app.config.tools.keys().map(|t| t.as_str()).collect();
            Error::not_found(format!(
                "tool {} (configured tools: {})",
                display_value(name),
                if known.is_empty() {
                    "none".into()
                } else {
                    known.join(", ")
                }
            ))
        })
}

/// Records a refusal that created no run (unknown tool, no or deny rule, policy).
pub(super) async fn audit_refusal(
    app: &Arc<Service>,
    who: &Principal,
    subject: String,
    data: serde_json::Value,
) -> Result<(), ServiceError> {
    let now = app.now();
    let draft = AuditDraft::new("run.refused", who.name.as_str(), subject, data);
    app.db(move |s| s.append_audit(&[draft], now)).await
}

/// Asks Cedar whether `who` may run `resource`; a refusal is audited with
/// `data` (plus the deciding policies) and answered with the policy's reason.
pub(super) async fn decide_or_refuse(
    app: &Arc<Service>,
    who: &Principal,
    action: ProxyAction,
    resource: ProxyResource<'_>,
    ctx: &ProxyContext,
    subject: String,
    mut data: serde_json::Value,
) -> Result<airlock_core::policy::Decision, ServiceError> {
    let name = match &resource {
        ProxyResource::Tool(t) => t.name.to_string(),
        ProxyResource::Operation(o) => o.name.to_string(),
    };
    let d = app.policy.decide_proxy(who, action, resource, true, ctx);
    if d.allowed {
        return Ok(d);
    }
    data["reason"] = json!("policy");
    data["policies"] = json!(d.policies);
    audit_refusal(app, who, subject, data).await?;
    Err(Error::forbidden(PolicyEngine::explain_proxy_refusal(action, &name, &d)).into())
}

/// Everything about a new run except what the store decides.
pub(super) struct Draft {
    pub run: Run,
    pub rate: Option<(Rate, String, String)>,
    /// Start executing here right away (created directly as running).
    pub run_now: bool,
    pub audit: Vec<AuditDraft>,
}

/// Writes a new run through the rate limit. Returns the stored run, or the
/// 429 refusal (recorded as a `rate_limited` run).
pub(super) async fn store_new(app: &Arc<Service>, d: Draft) -> Result<Run, ProxyError> {
    let now = app.now();
    let replica = app.replica_id.clone();
    let rate = d.rate.as_ref().map(|(rate, key, _)| RateCheck {
        principal: d.run.requester.clone(),
        key: key.clone(),
        rate: *rate,
    });
    let limit_rule = d.rate.as_ref().map(|(r, _, rule)| (*r, rule.clone()));
    let Draft {
        run,
        run_now,
        audit,
        ..
    } = d;
    let stored = app
        .db(move |s| {
            s.create_run(rate.as_ref(), now, &mut |recent| {
                let decision = match &limit_rule {
                    Some((r, _)) => r.decide(recent, now),
                    None => RateDecision::Allow,
                };
                let mut run = run.clone();
                match decision {
                    RateDecision::Allow => NewRun {
                        lease: run_now.then(|| (replica.clone(), lease_until(now))),
                        start_after: None,
                        count: true,
                        audit: audit.clone(),
                        run,
                    },
                    RateDecision::Refuse { next_allowed_at } => {
                        let (r, rule) = limit_rule.clone().expect("refused only with a limit");
                        run.state = RunState::RateLimited;
                        run.started_at = None;
                        run.lapses_at = None;
                        run.next_allowed_at = Some(next_allowed_at);
                        run.error = Some(format!(
                            "rate limit: {r} for {rule}; next allowed at {}",
                            fmt_time(next_allowed_at)
                        ));
                        let sub = subject(&run.id);
                        NewRun {
                            lease: None,
                            start_after: None,
                            count: false,
                            audit: vec![AuditDraft::new(
                                "run.rate_limited",
                                run.requester.as_str(),
                                sub,
                                json!({"tool": run.tool, "argv": run.argv, "operation": run.operation,
                                       "params": run.params, "rule": rule, "limit": r.to_string(),
                                       "next_allowed_at": fmt_time(next_allowed_at)}),
                            )],
                            run,
                        }
                    }
                }
            })
        })
        .await?;
    if stored.state == RunState::RateLimited {
        let next = stored.next_allowed_at.unwrap_or(now);
        let (rate, rule) = d
            .rate
            .map(|(r, _, rule)| (r, rule))
            .expect("refused only with a limit");
        return Err(ProxyError::RateLimited(Box::new(RateLimited {
            rule,
            rate,
            next_allowed_at: next,
            retry_after: retry_after_secs(now, next),
            run: Some(stored),
        })));
    }
    Ok(stored)
}

/// A new pending run with a fresh id and nothing decided yet.
pub(super) fn base_run(
    who: &Principal,
    tool: &Tool,
    argv: Vec<String>,
    reason: &str,
    rule: String,
    approvals: ApprovalRule,
    now: OffsetDateTime,
) -> Run {
    Run {
        id: new_run_id(),
        tool: tool.name.clone(),
        argv,
        operation: None,
        params: None,
        requester: who.name.clone(),
        reason: reason.to_string(),
        state: RunState::Pending,
        detached: false,
        rule,
        approvals,
        exit_code: None,
        started_at: None,
        finished_at: None,
        transcript_sha256: None,
        transcript_bytes: None,
        output_bytes: None,
        transcript_truncated: false,
        dry_run: None,
        error: None,
        next_allowed_at: None,
        lapses_at: None,
        reviews: vec![],
        created_at: now,
        updated_at: now,
    }
}

/// `airlock exec`: match the rule, check policy and the rate limit, then run
/// at once (allow) or wait for approvals (approve).
pub async fn exec(
    app: &Arc<Service>,
    who: &Principal,
    input: ExecInput,
) -> Result<Created, ProxyError> {
    let tool = match tool(app, &input.tool) {
        Ok(t) => t,
        Err(e) => {
            audit_refusal(
                app,
                who,
                format!("tool:{}", display_value(&input.tool).trim_matches('"')),
                json!({"reason": "unknown tool", "args_count": input.args.len()}),
            )
            .await?;
            return Err(e.into());
        }
    };
    check_exec_args(&input.args)?;
    check_reason(&input.reason)?;
    let sub = format!("tool:{}", tool.name);
    let display = std::iter::once(tool.name.as_str())
        .chain(input.args.iter().map(String::as_str))
        .collect::<Vec<_>>()
        .join(" ");
    let Some(rule) = tool.match_rule(&input.args) else {
        audit_refusal(
            app,
            who,
            sub,
            json!({"args": input.args, "rule": null, "reason": "no rule matches"}),
        )
        .await?;
        return Err(Error::forbidden(format!(
            "no rule of tool `{}` matches `{display}`, so it is denied; nothing ran",
            tool.name
        ))
        .into());
    };
    if rule.action == RuleAction::Deny {
        audit_refusal(
            app,
            who,
            sub,
            json!({"args": input.args, "rule": rule.describe(), "reason": rule.reason}),
        )
        .await?;
        return Err(Error::forbidden(format!(
            "{} of tool `{}` denies `{display}`: {}; nothing ran",
            rule.describe(),
            tool.name,
            rule.reason.as_deref().unwrap_or("no reason given")
        ))
        .into());
    }
    let now = app.now();
    let ctx = ProxyContext {
        reason: input.reason.clone(),
        mfa: who.mfa,
        hour: now.hour(),
        requester: None,
        args: input.args.clone(),
        params: BTreeMap::new(),
        rule_action: rule.action.as_str().into(),
    };
    let d = decide_or_refuse(
        app,
        who,
        ProxyAction::Exec,
        ProxyResource::Tool(tool),
        &ctx,
        sub,
        json!({"args": input.args, "rule": rule.describe()}),
    )
    .await?;
    let mut argv = Vec::with_capacity(input.args.len() + 1);
    argv.push(tool.path.clone());
    argv.extend(input.args.iter().cloned());
    let mut run = base_run(
        who,
        tool,
        argv,
        &input.reason,
        rule.describe(),
        ApprovalRule {
            count: rule.approvals.count,
            reviewers: rule.approvals.reviewers.clone(),
        },
        now,
    );
    let id = run.id.clone();
    run.detached = !input.attach;
    let sub = subject(&id);
    let mut audit = vec![AuditDraft::new(
        "run.created",
        who.name.as_str(),
        sub.clone(),
        json!({"tool": tool.name, "argv": run.argv, "rule": run.rule, "action": rule.action.as_str(),
               "reason": input.reason, "approvals": run.approvals, "policies": d.policies}),
    )];
    let run_now = rule.action == RuleAction::Allow;
    if run_now {
        super::execution::check_capacity(app)?;
        run.state = RunState::Approved
            .apply(RunTransition::Start)
            .map_err(Error::from)?;
        run.started_at = Some(now);
        audit.push(started_event(who.name.as_str(), &sub, &app.replica_id));
    } else {
        run.lapses_at = Some(now + rule.approval_timeout.to_time());
    }
    let stored = store_new(
        app,
        Draft {
            rate: rule.rate.map(|r| {
                (
                    r,
                    rule.rate_key(&tool.name),
                    format!("{} of tool {}", rule.describe(), tool.name),
                )
            }),
            run,
            run_now,
            audit,
        },
    )
    .await?;
    if stored.state == RunState::Running {
        return Ok(spawn_claimed(app, stored, tool, input.attach));
    }
    Ok(Created::Stored(stored))
}
