//! Who is asked to review, and what the email says. A pending request or run
//! goes to its service's address, else to the catalog emails of the users and
//! group members named as reviewers (never the requester), else to `[notify.email] to`.
//! Only catalog facts and what the requester typed go in: never secrets.

use std::collections::BTreeSet;
use std::sync::Arc;

use airlock_core::audit_chain::AuditEvent;
use airlock_core::request::{RequestId, RequestState};
use airlock_core::run::{RunId, RunState};
use airlock_core::ServiceName;

use super::DeliveryError;
use crate::Service;

/// One email to send.
pub struct Mail {
    /// Recipients (validated addresses).
    pub to: Vec<String>,
    pub subject: String,
    pub body: String,
    /// The request or run id, for a stable Message-ID.
    pub key: String,
}

/// The review email for `event`, or `None` when nobody needs one (not a
/// request/run, already decided, auto-approved, nobody to tell).
pub async fn compose(
    app: &Arc<Service>,
    event: &AuditEvent,
    fallback: &[String],
) -> Result<Option<Mail>, DeliveryError> {
    let retry = |e: crate::ServiceError| DeliveryError::Retry(format!("store: {e}"));
    if let Some(id) = event.subject.strip_prefix("request:") {
        let Ok(id) = RequestId::parse(id) else {
            return Ok(None);
        };
        let Some(r) = app
            .db_untracked(move |s| s.get_request(&id))
            .await
            .map_err(retry)?
        else {
            return Ok(None);
        };
        // Auto-approved, break-glass or already decided: nothing to review.
        if r.state != RequestState::Pending {
            return Ok(None);
        }
        let Ok(ent) = app.config.entitlement(r.entitlement.as_str()) else {
            return Ok(None);
        };
        let rule = app.approval_rule(&ent.approvals, ent.service.as_ref());
        let to = recipients(
            app,
            ent.service.as_ref(),
            &rule.reviewers,
            r.requester.as_str(),
            fallback,
        );
        let what = if ent.description.is_empty() {
            ent.name.to_string()
        } else {
            format!("{} ({})", ent.name, ent.description)
        };
        let lines = [
            ("What", what),
            ("Who", r.requester.to_string()),
            ("Why", r.reason.clone()),
            ("How long", r.requested_duration.to_string()),
            ("Approvals", approvals_line(rule.count, &rule.reviewers)),
        ];
        let subject = format!(
            "[airlock] {} requests {} for {}",
            r.requester, ent.name, r.requested_duration
        );
        Ok(mail(app, to, subject, &lines, "requests", r.id.as_str()))
    } else if let Some(id) = event.subject.strip_prefix("run:") {
        let Ok(id) = RunId::parse(id) else {
            return Ok(None);
        };
        let Some(run) = app
            .db_untracked(move |s| s.get_run(&id))
            .await
            .map_err(retry)?
        else {
            return Ok(None);
        };
        if run.state != RunState::Pending {
            return Ok(None);
        }
        let service = super::run_service(app, &run);
        let to = recipients(
            app,
            service.as_ref(),
            &run.approvals.reviewers,
            run.requester.as_str(),
            fallback,
        );
        let what = match &run.operation {
            Some(op) => format!("operation {op}"),
            None => format!("tool {}", run.tool),
        };
        let mut lines = vec![("What", what.clone()), ("Command", run.argv.join(" "))];
        if let Some(p) = &run.params {
            let params: Vec<String> = p.iter().map(|(k, v)| format!("{k}={v}")).collect();
            lines.push(("Parameters", params.join(" ")));
        }
        lines.extend([
            ("Who", run.requester.to_string()),
            ("Why", run.reason.clone()),
            (
                "Approvals",
                approvals_line(run.approvals.count, &run.approvals.reviewers),
            ),
        ]);
        let subject = format!("[airlock] {} wants to run {what}", run.requester);
        Ok(mail(app, to, subject, &lines, "runs", run.id.as_str()))
    } else {
        Ok(None)
    }
}

fn approvals_line(count: u32, reviewers: &[String]) -> String {
    format!("{count} from {}", reviewers.join(", "))
}

/// Service address, else reviewers' catalog emails, else the fallback list.
pub fn recipients(
    app: &Service,
    service: Option<&ServiceName>,
    reviewers: &[String],
    requester: &str,
    fallback: &[String],
) -> Vec<String> {
    if let Some(addr) =
        service.and_then(|s| app.service_catalog().get(s).and_then(|s| s.email.clone()))
    {
        return vec![addr];
    }
    let mut names = BTreeSet::new();
    for r in reviewers {
        if let Some((_, members)) = app.config.groups.iter().find(|(g, _)| g.as_str() == r) {
            names.extend(members.iter().map(|m| m.as_str().to_string()));
        } else {
            names.insert(r.clone());
        }
    }
    names.remove(requester);
    let emails: BTreeSet<String> = app
        .config
        .users
        .values()
        .filter(|u| names.contains(u.name.as_str()))
        .filter_map(|u| u.email.clone())
        .filter(|e| airlock_core::notify::is_email(e))
        .collect();
    if emails.is_empty() {
        fallback.to_vec()
    } else {
        emails.into_iter().collect()
    }
}

fn mail(
    app: &Service,
    to: Vec<String>,
    subject: String,
    lines: &[(&str, String)],
    kind: &str,
    id: &str,
) -> Option<Mail> {
    if to.is_empty() {
        tracing::info!(id, "no email recipient for review (no service email, reviewer emails or [notify.email] to)");
        return None;
    }
    let mut body = String::from("This waits for your review in airlock.\n\n");
    for (k, v) in lines {
        body.push_str(&format!("{:<11} {}\n", format!("{k}:"), clean_body(v)));
    }
    body.push('\n');
    match &app.config.server.public_url {
        Some(base) => body.push_str(&format!(
            "Review it: {}/ui/{kind}/{id}\n",
            base.trim_end_matches('/')
        )),
        None => body.push_str("(set [server] public_url to get a link here)\n"),
    }
    body.push_str(&format!(
        "Or from a terminal: airlock review {id} --approve (or --deny)\n"
    ));
    Some(Mail {
        to,
        subject: clean_line(&subject),
        body,
        key: id.to_string(),
    })
}

/// One line, no control characters, bounded (subjects; header injection).
pub fn clean_line(s: &str) -> String {
    let s: String = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(200)
        .collect();
    s.trim().to_string()
}

/// Body text: keeps line breaks and tabs, drops other control characters
/// (terminal escapes), bounded.
fn clean_body(s: &str) -> String {
    s.chars()
        .filter(|c| !c.is_control() || matches!(c, '\n' | '\t'))
        .take(2000)
        .collect::<String>()
        .replace('\n', "\n            ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_cannot_carry_extra_headers() {
        let s = clean_line("[airlock] x requests y\r\nBcc: evil@example.com\u{1b}[31m");
        assert!(
            !s.contains('\r') && !s.contains('\n') && !s.contains('\u{1b}'),
            "{s}"
        );
        assert!(s.starts_with("[airlock] x requests y  Bcc"), "{s}");
    }

    #[test]
    fn body_keeps_lines_but_not_escapes() {
        assert_eq!(clean_body("a\u{1b}[2Jb\nc"), "a[2Jb\n            c");
    }
}
