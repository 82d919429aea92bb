//! Run operations as the API performs them: check the rule or operation and
//! Cedar, then let the store create or move the run (rate limit, lease,
//! audit events in the same transaction); execution happens only after the
//! store recorded `running` with this replica's lease.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use airlock_core::approval::{ApprovalRule, Tally};
use airlock_core::audit_chain::AuditDraft;
use airlock_core::config::ReasonRule;
use airlock_core::operation::Operation;
use airlock_core::policy::{PolicyEngine, ProxyAction, ProxyContext, ProxyResource};
use airlock_core::rate::{human_secs, retry_after_secs, Rate, RateDecision};
use airlock_core::request::{Review, ReviewDecision};
use airlock_core::run::{DryRun, Run, RunApprovals, RunId, RunState, RunTransition, RUN_ID_PREFIX};
use airlock_core::tool::{check_exec_args, RuleAction, Tool};
use airlock_core::{Error, OperationName, Principal, ToolName};
use airlock_store::{LeaseChange, NewRun, RateCheck, RunChange};
use axum::body::Bytes;
use axum::http::StatusCode;
use rand::Rng;
use serde_json::json;
use time::OffsetDateTime;
use tokio::sync::mpsc;

use super::executor::{self, Ending, Job, Outcome, Sinks};
use super::frames::{json_frame, Kind};
use super::{ATTACH_GRACE, LEASE, RENEW_EVERY};
use crate::app::App;
use crate::lifecycle::fmt_time;
use crate::problem::ApiError;

/// Frames buffered towards an attached client.
const CLIENT_BUFFER: usize = 32;
/// Longest review comment.
const MAX_COMMENT_LEN: usize = 1024;
/// Dry-run output kept on the run for reviewers.
const DRY_RUN_CAP: usize = 64 * 1024;

/// A refusal at the rate limit: HTTP 429 with `Retry-After`.
#[derive(Debug, Clone)]
pub struct RateLimited {
    /// The rule or operation whose limit was hit, in words.
    pub rule: String,
    pub rate: Rate,
    pub next_allowed_at: OffsetDateTime,
    pub retry_after: u64,
    /// The `rate_limited` run that records the refusal.
    pub run: Run,
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
    Api(ApiError),
    RateLimited(Box<RateLimited>),
}

impl<E: Into<ApiError>> From<E> for ProxyError {
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
    DryRunOnly(serde_json::Value),
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

/// Body of `POST /api/v1/operations/{name}/runs`.
#[derive(Debug, Clone)]
pub struct OperationInput {
    pub params: BTreeMap<String, String>,
    pub reason: String,
    pub attach: bool,
    /// Only run the dry run; create nothing.
    pub dry_run_only: bool,
}

/// A new run id: `run_` and 16 characters of lowercase base32.
pub fn new_run_id() -> RunId {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz234567";
    let mut rng = rand::thread_rng();
    let s: String = (0..16)
        .map(|_| ALPHABET[rng.gen_range(0..32)] as char)
        .collect();
    RunId::parse(&format!("{RUN_ID_PREFIX}{s}")).expect("generated ids are valid")
}

/// The audit subject of a run.
pub fn subject(id: &RunId) -> String {
    format!("run:{id}")
}

fn approval_rule(a: &RunApprovals) -> ApprovalRule {
    ApprovalRule {
        count: a.count,
        reviewers: a.reviewers.clone(),
    }
}

fn lease_until(now: OffsetDateTime) -> OffsetDateTime {
    now + time::Duration::seconds(LEASE.as_secs() as i64)
}

fn check_reason(reason: &str) -> Result<(), Error> {
    ReasonRule {
        required: false,
        pattern: None,
    }
    .check(reason)
}

fn check_comment(comment: &Option<String>) -> Result<(), Error> {
    if let Some(c) = comment {
        if c.len() > MAX_COMMENT_LEN {
            return Err(Error::invalid(
                "comment",
                format!("longer than {MAX_COMMENT_LEN} bytes"),
            ));
        }
        if c.chars().any(|ch| ch.is_control() && ch != '\n') {
            return Err(Error::invalid("comment", "contains control characters"));
        }
    }
    Ok(())
}

/// The tool, or a 404 that lists the configured ones.
pub fn tool<'a>(app: &'a App, name: &str) -> Result<&'a Tool, Error> {
    ToolName::parse(name)
        .ok()
        .and_then(|n| app.config.tools.get(&n))
        .ok_or_else(|| {
            let known: Vec<&str> = app.config.tools.keys().map(|t| t.as_str()).collect();
            Error::not_found(format!(
                "tool `{}` (configured tools: {})",
                name.chars().take(64).collect::<String>(),
                if known.is_empty() {
                    "none".into()
                } else {
                    known.join(", ")
                }
            ))
        })
}

/// The operation, or a 404.
pub fn operation<'a>(app: &'a App, name: &str) -> Result<&'a Operation, Error> {
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

/// Records a refusal that created no run (unknown tool, no or deny rule, policy).
async fn audit_refusal(
    app: &Arc<App>,
    who: &Principal,
    subject: String,
    data: serde_json::Value,
) -> Result<(), ApiError> {
    let now = app.now();
    let draft = AuditDraft::new("run.refused", who.name.as_str(), subject, data);
    app.db(move |s| s.append_audit(&[draft], now)).await
}

fn job_for(tool: &Tool, argv: &[String]) -> Job {
    Job {
        argv: argv.to_vec(),
        env: tool.env.clone(),
        timeout: std::time::Duration::from_secs(tool.timeout.as_secs()),
        cap: tool.transcript_cap as usize,
    }
}

/// Who may read a run's output: its requester, its reviewers, admins.
pub fn may_read_output(who: &Principal, run: &Run) -> bool {
    who.admin || run.requester == who.name || run.approvals.reviewers.iter().any(|r| who.matches(r))
}

/// Everything about a new run except what the store decides.
struct Draft {
    run: Run,
    rate: Option<(Rate, String, String)>,
    /// Start executing here right away (created directly as running).
    run_now: bool,
    audit: Vec<AuditDraft>,
}

/// Writes a new run through the rate limit. Returns the stored run, or the
/// 429 refusal (recorded as a `rate_limited` run).
async fn store_new(app: &Arc<App>, d: Draft) -> Result<Run, ProxyError> {
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
            run: stored,
        })));
    }
    Ok(stored)
}

fn base_run(
    id: RunId,
    who: &Principal,
    tool: &Tool,
    argv: Vec<String>,
    reason: &str,
    rule: String,
    approvals: RunApprovals,
    now: OffsetDateTime,
) -> Run {
    Run {
        id,
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
    app: &Arc<App>,
    who: &Principal,
    input: ExecInput,
) -> Result<Created, ProxyError> {
    let tool = match tool(app, &input.tool) {
        Ok(t) => t,
        Err(e) => {
            audit_refusal(
                app,
                who,
                format!("tool:{}", input.tool.chars().take(64).collect::<String>()),
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
    let d = app.policy.decide_proxy(
        who,
        ProxyAction::Exec,
        ProxyResource::Tool(tool),
        true,
        &ctx,
    );
    if !d.allowed {
        audit_refusal(app, who, sub, json!({"args": input.args, "rule": rule.describe(), "reason": "policy", "policies": d.policies})).await?;
        return Err(Error::forbidden(PolicyEngine::explain_proxy_refusal(
            ProxyAction::Exec,
            tool.name.as_str(),
            &d,
        ))
        .into());
    }
    let mut argv = Vec::with_capacity(input.args.len() + 1);
    argv.push(tool.path.clone());
    argv.extend(input.args.iter().cloned());
    let id = new_run_id();
    let mut run = base_run(
        id.clone(),
        who,
        tool,
        argv,
        &input.reason,
        rule.describe(),
        RunApprovals {
            count: rule.approvals.count,
            reviewers: rule.approvals.reviewers.clone(),
        },
        now,
    );
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

fn started_event(actor: &str, sub: &str, replica: &str) -> AuditDraft {
    AuditDraft::new(
        "run.started",
        actor,
        sub.to_string(),
        json!({"executor": replica}),
    )
}

/// Runs a dry run to its end and describes it for reviewers.
async fn dry_run(tool: &Tool, argv: &[String]) -> DryRun {
    let mut job = job_for(tool, argv);
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

/// `airlock operation run`: validate parameters, check policy and the rate
/// limit, run the dry run (reviewers see it next to the argv), then wait for
/// approvals or run.
pub async fn run_operation(
    app: &Arc<App>,
    who: &Principal,
    name: &str,
    input: OperationInput,
) -> Result<Created, ProxyError> {
    let op = operation(app, name)?;
    let tool =
        app.config.tools.get(&op.tool).ok_or_else(|| {
            ApiError::internal(format!("operation {} names a missing tool", op.name))
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
    let d = app.policy.decide_proxy(
        who,
        ProxyAction::Operation,
        ProxyResource::Operation(op),
        true,
        &ctx,
    );
    if !d.allowed {
        audit_refusal(
            app,
            who,
            format!("operation:{}", op.name),
            json!({"params": prepared.params, "reason": "policy", "policies": d.policies}),
        )
        .await?;
        return Err(Error::forbidden(PolicyEngine::explain_proxy_refusal(
            ProxyAction::Operation,
            op.name.as_str(),
            &d,
        ))
        .into());
    }
    if input.dry_run_only {
        let Some(argv) = &prepared.dry_run_argv else {
            return Err(Error::invalid(
                "dry_run",
                format!("operation `{}` has no dry_run_args", op.name),
            )
            .into());
        };
        let dr = dry_run(tool, argv).await;
        let draft = AuditDraft::new(
            "operation.dry_run",
            who.name.as_str(),
            format!("operation:{}", op.name),
            json!({"argv": dr.argv, "params": prepared.params, "exit_code": dr.exit_code,
                   "output_sha256": dr.output_sha256, "truncated": dr.truncated, "would_run": prepared.argv}),
        );
        let at = app.now();
        app.db(move |s| s.append_audit(&[draft], at)).await?;
        return Ok(Created::DryRunOnly(json!({
            "operation": op.name, "params": prepared.params, "argv": prepared.argv, "dry_run": dr,
        })));
    }
    let id = new_run_id();
    let sub = subject(&id);
    let mut run = base_run(
        id.clone(),
        who,
        tool,
        prepared.argv.clone(),
        &input.reason,
        format!("operation {}", op.name),
        RunApprovals {
            count: op.approvals.count,
            reviewers: op.approvals.reviewers.clone(),
        },
        now,
    );
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
        Some(argv) => Some(dry_run(tool, argv).await),
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

fn empty_transcript() -> airlock_store::Transcript {
    airlock_store::Transcript {
        bytes: vec![],
        sha256: hex::encode(<sha2::Sha256 as sha2::Digest>::digest(b"")),
        output_bytes: 0,
        truncated: false,
    }
}

/// When a background executor may start a run approved at `at`.
fn start_after(at: OffsetDateTime, detached: bool) -> OffsetDateTime {
    if detached {
        at
    } else {
        at + time::Duration::seconds(ATTACH_GRACE.as_secs() as i64)
    }
}

/// Claims an approved run for this replica (approved → running, exactly
/// once) and executes it. With `who`, only the run's requester may start it.
pub async fn start(
    app: &Arc<App>,
    who: Option<&Principal>,
    id: RunId,
    attach: bool,
) -> Result<Created, ProxyError> {
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
        None => {
            // The catalog changed under an approved run: fail it, never guess.
            let o = Outcome {
                ending: Ending::NotStarted(format!(
                    "tool `{}` is no longer configured; nothing ran",
                    run.tool
                )),
                exit_code: None,
                transcript: empty_transcript(),
            };
            let r = finish(app, &run.id, &o, std::time::Duration::ZERO).await?;
            Ok(Created::Stored(r))
        }
    }
}

/// Executes a run this replica holds (state `running`, our lease) in the
/// background; with `attach`, its output also flows to the returned receiver.
fn spawn_claimed(app: &Arc<App>, run: Run, tool: &Tool, attach: bool) -> Created {
    let job = job_for(tool, &run.argv);
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

async fn execute_claimed(app: Arc<App>, run: Run, job: Job, client: Option<mpsc::Sender<Bytes>>) {
    let live = app.proxy.register(&run.id, job.cap);
    if let Some(tx) = &client {
        let _ = tx.send(json_frame(Kind::Start, &run)).await;
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
            let _ = tx.send(json_frame(Kind::End, &r)).await;
        }
        (Some(tx), Err(e)) => {
            let _ = tx
                .send(json_frame(
                    Kind::Error,
                    &json!({"status": e.status.as_u16(), "detail": e.detail}),
                ))
                .await;
        }
        (None, Err(e)) => {
            tracing::error!(run = %run.id, error = %e.detail, "could not record the end of a run");
        }
        (None, Ok(_)) => {}
    }
}

/// Keeps our lease on a running run and notices cancel requests made on any replica.
async fn renew(app: Arc<App>, id: RunId, live: Arc<super::hub::LiveRun>) {
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
                    if r.state != RunState::Running || lease.owner.as_deref() != Some(me.as_str()) {
                        return Err(Error::Conflict {
                            current_state: r.state.to_string(),
                            message: "this replica no longer holds the run".into(),
                        });
                    }
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
            Err(e) if e.status == StatusCode::CONFLICT => {
                live.cancel(
                    "airlock (the run's lease was lost: another replica recorded it as failed)",
                );
                return;
            }
            Err(e) => {
                tracing::warn!(run = %id, error = %e.detail, "could not renew a run's lease; retrying");
            }
        }
    }
}

/// Records how a run ended (our lease required), with the transcript and
/// its hash in the same transaction as the `run.finished` event. Retries
/// while the database is unavailable.
async fn finish(
    app: &Arc<App>,
    id: &RunId,
    o: &Outcome,
    timeout: std::time::Duration,
) -> Result<Run, ApiError> {
    let error = o.error(timeout);
    let mut attempt = 0;
    loop {
        let now = app.now();
        let me = app.replica_id.clone();
        let (o2, error2, id2) = (o.clone(), error.clone(), id.clone());
        let r = app
            .db(move |s| {
                s.update_run(&id2, now, &mut |r, lease| {
                    if r.state != RunState::Running || lease.owner.as_deref() != Some(me.as_str()) {
                        return Err(Error::Conflict {
                            current_state: r.state.to_string(),
                            message: "this replica no longer holds the run".into(),
                        });
                    }
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
            Err(e) if e.status == StatusCode::SERVICE_UNAVAILABLE && attempt < 10 => {
                attempt += 1;
                tokio::time::sleep(std::time::Duration::from_millis(500 << attempt.min(4))).await;
            }
            Err(e) => return Err(e),
        }
    }
}

/// Approve or deny a pending run (N of M, never one's own, within its window).
pub async fn review(
    app: &Arc<App>,
    who: &Principal,
    id: RunId,
    decision: ReviewDecision,
    comment: Option<String>,
) -> Result<Run, ApiError> {
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
    let rule = approval_rule(&current.approvals);
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
                rule.check_reviewer_of(&who2, &r.requester, &r.reviews, r.state.as_str())?;
                let mut reviews = r.reviews.clone();
                reviews.push(review.clone());
                let sub = subject(&r.id);
                let mut audit = vec![AuditDraft::new(
                    "run.reviewed",
                    &actor,
                    sub.clone(),
                    json!({"decision": decision.as_str(), "comment": comment}),
                )];
                let mut change = RunChange {
                    review: Some(review.clone()),
                    ..RunChange::default()
                };
                match rule.tally_reviews(&r.requester, &reviews) {
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
            if e.status != StatusCode::CONFLICT {
                tracing::warn!(run = %run.id, error = %e.detail, "could not start an approved run; the background loop retries");
            }
        }
    }
    Ok(run)
}

/// Cancels a run: before it started it fails at once; while running, the
/// executor holding it kills its process group (here at once, on another
/// replica at its next lease renewal).
pub async fn cancel(
    app: &Arc<App>,
    who: &Principal,
    id: RunId,
    comment: Option<String>,
) -> Result<Run, ApiError> {
    check_comment(&comment)?;
    let now = app.now();
    let who2 = who.clone();
    let run = app
        .db(move |s| {
            s.update_run(&id, now, &mut |r, _| {
                let may = r.requester == who2.name
                    || who2.admin
                    || approval_rule(&r.approvals).names_reviewer(&who2);
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

/// Background duties for one due run: lapse it, start it, or record that its
/// executor died (never re-run: it may have had effects).
pub async fn tend(app: &Arc<App>, id: RunId) {
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
                             (it may have had effects): check the target and start a new run if needed",
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
                    let o = Outcome {
                        ending: Ending::NotStarted(format!(
                            "tool `{}` is no longer configured; nothing ran",
                            run.tool
                        )),
                        exit_code: None,
                        transcript: empty_transcript(),
                    };
                    let _ = finish(app, &run.id, &o, std::time::Duration::ZERO).await;
                }
            }
        }
        Ok(_) => {}
        Err(e) => {
            tracing::warn!(run = %id, error = %e.detail, "background step on a run failed; it will be retried")
        }
    }
}
