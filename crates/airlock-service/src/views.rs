//! Domain objects as the API answers them: the one place a `Request` or a
//! `Run` becomes its `airlock_api` view. Every handler and every run-stream
//! frame that carries one goes through here, so the wire shape is written once
//! (the tests pin it to what the core types serialize to).

use airlock_api::requests::{GrantView, RequestView, ReviewView};
use airlock_api::runs::{ApprovalRuleView, DryRunPreview, DryRunView, RunView};
use airlock_core::operation::Prepared;
use airlock_core::request::{GrantStatus, Request, Review};
use airlock_core::run::{DryRun, Run};
use airlock_core::OperationName;
use time::OffsetDateTime;

/// RFC 3339 exactly as `time::serde::rfc3339` writes it (the offset as
/// stored, fractional seconds only when there are any).
fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

fn rfc3339_opt(t: Option<OffsetDateTime>) -> Option<String> {
    t.map(rfc3339)
}

/// A review of a request or a run.
pub fn review_view(r: &Review) -> ReviewView {
    ReviewView {
        reviewer: r.reviewer.to_string(),
        decision: r.decision.as_str().to_string(),
        comment: r.comment.clone(),
        at: rfc3339(r.at),
    }
}

fn grant_view(g: &GrantStatus) -> GrantView {
    GrantView {
        phase: g.phase.as_str().to_string(),
        attempts: g.attempts,
        last_error: g.last_error.clone(),
        next_attempt_at: rfc3339_opt(g.next_attempt_at),
    }
}

/// A request as the API answers it.
pub fn request_view(r: &Request) -> RequestView {
    RequestView {
        id: r.id.to_string(),
        entitlement: r.entitlement.to_string(),
        requester: r.requester.to_string(),
        reason: r.reason.clone(),
        state: r.state.as_str().to_string(),
        requested_duration: r.requested_duration.as_secs(),
        not_before: rfc3339_opt(r.not_before),
        not_after: rfc3339_opt(r.not_after),
        breakglass: r.breakglass,
        post_review_closed: r.post_review_closed,
        reviews: r.reviews.iter().map(review_view).collect(),
        grant: grant_view(&r.grant),
        created_at: rfc3339(r.created_at),
        updated_at: rfc3339(r.updated_at),
    }
}

/// Requests as the API lists them.
pub fn request_views(rs: &[Request]) -> Vec<RequestView> {
    rs.iter().map(request_view).collect()
}

fn dry_run_view(d: &DryRun) -> DryRunView {
    DryRunView {
        argv: d.argv.clone(),
        exit_code: d.exit_code,
        output: d.output.clone(),
        output_sha256: d.output_sha256.clone(),
        truncated: d.truncated,
        error: d.error.clone(),
    }
}

/// A run as the API answers it (and as run-stream `start`/`end` frames carry it).
pub fn run_view(r: &Run) -> RunView {
    RunView {
        id: r.id.to_string(),
        tool: r.tool.to_string(),
        argv: r.argv.clone(),
        operation: r.operation.as_ref().map(|o| o.to_string()),
        params: r.params.clone(),
        requester: r.requester.to_string(),
        reason: r.reason.clone(),
        state: r.state.as_str().to_string(),
        detached: r.detached,
        rule: r.rule.clone(),
        approvals: ApprovalRuleView {
            count: r.approvals.count,
            reviewers: r.approvals.reviewers.clone(),
        },
        exit_code: r.exit_code,
        started_at: rfc3339_opt(r.started_at),
        finished_at: rfc3339_opt(r.finished_at),
        transcript_sha256: r.transcript_sha256.clone(),
        transcript_bytes: r.transcript_bytes,
        output_bytes: r.output_bytes,
        transcript_truncated: r.transcript_truncated,
        dry_run: r.dry_run.as_ref().map(dry_run_view),
        error: r.error.clone(),
        next_allowed_at: rfc3339_opt(r.next_allowed_at),
        lapses_at: rfc3339_opt(r.lapses_at),
        reviews: r.reviews.iter().map(review_view).collect(),
        created_at: rfc3339(r.created_at),
        updated_at: rfc3339(r.updated_at),
    }
}

/// Runs as the API lists them.
pub fn run_views(rs: &[Run]) -> Vec<RunView> {
    rs.iter().map(run_view).collect()
}

/// What an operation's dry run alone answers.
pub fn dry_run_preview(op: &OperationName, prepared: &Prepared, dr: &DryRun) -> DryRunPreview {
    DryRunPreview {
        operation: op.to_string(),
        params: prepared.params.clone(),
        argv: prepared.argv.clone(),
        dry_run: dry_run_view(dr),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use airlock_core::approval::ApprovalRule;
    use airlock_core::request::{GrantPhase, RequestId, RequestState, ReviewDecision};
    use airlock_core::run::{RunId, RunState};
    use airlock_core::{EntitlementName, Span, ToolName, UserName};
    use time::macros::datetime;

    fn review(who: &str, decision: ReviewDecision, comment: Option<&str>) -> Review {
        Review {
            reviewer: UserName::parse(who).unwrap(),
            decision,
            comment: comment.map(str::to_string),
            // Fractional seconds: the view must write them as the core type does.
            at: datetime!(2026-12-03 10:05:00.123456 UTC),
        }
    }

    fn request(full: bool) -> Request {
        Request {
            id: RequestId::parse("abcdefgh234567").unwrap(),
            entitlement: EntitlementName::parse("pg-read").unwrap(),
            requester: UserName::parse("alice").unwrap(),
            reason: "INC-42 \"quoted\"".into(),
            state: if full {
                RequestState::Active
            } else {
                RequestState::Pending
            },
            requested_duration: Span::from_secs(1800).unwrap(),
            not_before: full.then_some(datetime!(2026-12-03 10:06:00 UTC)),
            not_after: full.then_some(datetime!(2026-12-03 10:36:00 UTC)),
            breakglass: full,
            post_review_closed: false,
            reviews: if full {
                vec![
                    review("bob", ReviewDecision::Approve, Some("ok — go")),
                    review("carol", ReviewDecision::Deny, None),
                ]
            } else {
                vec![]
            },
            grant: GrantStatus {
                phase: if full {
                    GrantPhase::Applied
                } else {
                    GrantPhase::None
                },
                attempts: u32::from(full) * 2,
                last_error: full.then(|| "connection refused".to_string()),
                next_attempt_at: full.then_some(datetime!(2026-12-03 10:07:00 UTC)),
            },
            created_at: datetime!(2026-12-03 10:00:00 UTC),
            updated_at: datetime!(2026-12-03 10:06:00.5 UTC),
            secret_salt: vec![1, 2, 3],
        }
    }

    fn run(full: bool) -> Run {
        Run {
            id: RunId::parse("run_abcdefgh234567").unwrap(),
            tool: ToolName::parse("kubectl").unwrap(),
            argv: vec!["/usr/bin/kubectl".into(), "delete".into(), "pod x".into()],
            operation: full.then(|| OperationName::parse("restart").unwrap()),
            params: full.then(|| {
                [("namespace".to_string(), "payments".to_string())]
                    .into_iter()
                    .collect()
            }),
            requester: UserName::parse("alice").unwrap(),
            reason: "INC-42".into(),
            state: if full {
                RunState::TimedOut
            } else {
                RunState::Pending
            },
            detached: full,
            rule: "rule 2 [\"delete\", \"pod\", \"*\"]".into(),
            approvals: ApprovalRule {
                count: 2,
                reviewers: vec!["sre".into(), "user:dave".into()],
            },
            exit_code: full.then_some(-9),
            started_at: full.then_some(datetime!(2026-12-03 10:06:00 UTC)),
            finished_at: full.then_some(datetime!(2026-12-03 10:07:00.25 UTC)),
            transcript_sha256: full.then(|| "ab".repeat(32)),
            transcript_bytes: full.then_some(1024),
            output_bytes: full.then_some(4096),
            transcript_truncated: full,
            dry_run: full.then(|| DryRun {
                argv: vec!["/usr/bin/kubectl".into(), "get".into()],
                exit_code: None,
                output: "line 1\nline 2\n".into(),
                output_sha256: "cd".repeat(32),
                truncated: true,
                error: Some("killed".into()),
            }),
            error: full.then(|| "timed out after 60s".to_string()),
            next_allowed_at: full.then_some(datetime!(2026-12-03 11:00:00 UTC)),
            lapses_at: Some(datetime!(2026-12-03 11:00:00 UTC)),
            reviews: if full {
                vec![review("bob", ReviewDecision::Approve, None)]
            } else {
                vec![]
            },
            created_at: datetime!(2026-12-03 10:00:00 UTC),
            updated_at: datetime!(2026-12-03 10:07:00.25 UTC),
        }
    }

    #[test]
    fn a_request_view_is_exactly_what_the_core_request_serializes_to() {
        for full in [true, false] {
            let r = request(full);
            let core = serde_json::to_value(&r).unwrap();
            let view = serde_json::to_value(request_view(&r)).unwrap();
            assert_eq!(view, core);
            // Same keys in the same order (the CLI prints answers as they came).
            assert_eq!(
                serde_json::to_string(&request_view(&r)).unwrap(),
                serde_json::to_string(&r).unwrap()
            );
            let back: RequestView = serde_json::from_value(core).unwrap();
            assert_eq!(back, request_view(&r));
        }
    }

    #[test]
    fn a_run_view_is_exactly_what_the_core_run_serializes_to() {
        for full in [true, false] {
            let r = run(full);
            let core = serde_json::to_value(&r).unwrap();
            let view = serde_json::to_value(run_view(&r)).unwrap();
            assert_eq!(view, core);
            assert_eq!(
                serde_json::to_string(&run_view(&r)).unwrap(),
                serde_json::to_string(&r).unwrap()
            );
            let back: RunView = serde_json::from_value(core).unwrap();
            assert_eq!(back, run_view(&r));
        }
    }

    #[test]
    fn a_dry_run_preview_keeps_its_shape() {
        let r = run(true);
        let dr = r.dry_run.clone().unwrap();
        let prepared = Prepared {
            params: r.params.clone().unwrap(),
            argv: r.argv.clone(),
            dry_run_argv: Some(dr.argv.clone()),
        };
        let op = r.operation.clone().unwrap();
        let before = serde_json::json!({
            "operation": op, "params": prepared.params, "argv": prepared.argv, "dry_run": dr,
        });
        let view = dry_run_preview(&op, &prepared, &dr);
        assert_eq!(serde_json::to_value(&view).unwrap(), before);
    }
}
