//! Block Kit messages for requests and runs, rendered from their current
//! state (so a redelivered or late event still shows the truth). Pure: no IO.
//! Everything a user typed is escaped per Slack's mrkdwn rules (`&`, `<`, `>`)
//! so a reason cannot mention `@channel`, forge links or break the layout.

use airlock_core::approval::ApprovalRule;
use airlock_core::request::{Request, RequestState, ReviewDecision};
use airlock_core::run::{Run, RunState};
use serde_json::{json, Value};
use time::OffsetDateTime;

/// `action_id` of the Approve button on a request message.
pub const APPROVE_REQUEST: &str = "airlock_request_approve";
/// `action_id` of the Deny button on a request message.
pub const DENY_REQUEST: &str = "airlock_request_deny";
/// `action_id` of the Approve button on a run message.
pub const APPROVE_RUN: &str = "airlock_run_approve";
/// `action_id` of the Deny button on a run message.
pub const DENY_RUN: &str = "airlock_run_deny";

/// Slack's limit on a section's text.
pub const MAX_SECTION_TEXT: usize = 3000;
/// Longest user-supplied text shown (reasons, argv); the rest is cut with `…`.
const MAX_USER_TEXT: usize = 1500;
/// Longest notification fallback text.
const MAX_FALLBACK: usize = 300;

/// A message ready for chat.postMessage / chat.update.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    /// Notification fallback (plain, escaped).
    pub text: String,
    /// Block Kit blocks.
    pub blocks: Value,
}

/// Escapes Slack's control characters so text shows literally.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            c if c.is_control() && c != '\n' => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

/// Escapes and cuts to at most `max` characters (never inside an entity).
fn clip(s: &str, max: usize) -> String {
    let mut out = String::new();
    let mut n = 0;
    for c in s.chars() {
        let piece = escape(c.encode_utf8(&mut [0; 4]));
        let len = piece.chars().count();
        if n + len > max.saturating_sub(1) {
            out.push('…');
            return out;
        }
        out.push_str(&piece);
        n += len;
    }
    out
}

/// A time Slack shows in each reader's own time zone (fallback: RFC 3339 UTC).
fn when(t: OffsetDateTime) -> String {
    format!(
        "<!date^{}^{{date_short_pretty}} {{time}}|{}>",
        t.unix_timestamp(),
        crate::lifecycle::fmt_time(t)
    )
}

fn section(text: String) -> Value {
    json!({"type": "section", "text": {"type": "mrkdwn", "text": text}})
}

fn context(text: String) -> Value {
    json!({"type": "context", "elements": [{"type": "mrkdwn", "text": text}]})
}

fn buttons(approve: &str, deny: &str, id: &str) -> Value {
    json!({"type": "actions", "block_id": format!("airlock_review_{id}"), "elements": [
        {"type": "button", "action_id": approve, "style": "primary", "value": id,
         "text": {"type": "plain_text", "text": "Approve"}},
        {"type": "button", "action_id": deny, "style": "danger", "value": id,
         "text": {"type": "plain_text", "text": "Deny"},
         "confirm": {"title": {"type": "plain_text", "text": "Deny this?"},
                     "text": {"type": "plain_text", "text": "The requester will have to ask again."},
                     "confirm": {"type": "plain_text", "text": "Deny"},
                     "deny": {"type": "plain_text", "text": "Cancel"}}},
    ]})
}

fn names(reviews: &[airlock_core::request::Review], decision: ReviewDecision) -> String {
    reviews
        .iter()
        .filter(|r| r.decision == decision)
        .map(|r| format!("*{}*", escape(r.reviewer.as_str())))
        .collect::<Vec<_>>()
        .join(", ")
}

fn approvals_so_far(reviews: &[airlock_core::request::Review], need: u32) -> String {
    let have = reviews
        .iter()
        .filter(|r| r.decision == ReviewDecision::Approve)
        .count();
    if have == 0 {
        format!(
            "waiting for {need} approval{}",
            if need == 1 { "" } else { "s" }
        )
    } else {
        format!(
            "{have} of {need} approvals ({})",
            names(reviews, ReviewDecision::Approve)
        )
    }
}

/// The message about a request: what, who, why, how long, its state, and
/// Approve/Deny buttons while it is pending.
pub fn request_message(r: &Request, rule: &ApprovalRule, description: &str) -> Message {
    let who = escape(r.requester.as_str());
    let what = escape(r.entitlement.as_str());
    let dur = r.requested_duration.to_string();
    let approved_by = names(&r.reviews, ReviewDecision::Approve);
    let status = match r.state {
        RequestState::Pending => format!(
            ":hourglass_flowing_sand: *Pending* · {}",
            approvals_so_far(&r.reviews, rule.count)
        ),
        RequestState::Approved if r.breakglass => {
            ":rotating_light: *Break-glass* · applying the grant".into()
        }
        RequestState::Approved => {
            format!(":white_check_mark: *Approved* by {approved_by} · applying the grant")
        }
        RequestState::Active => {
            let until = r.not_after.map(when).unwrap_or_default();
            if r.breakglass {
                format!(":rotating_light: *Active (break-glass)* until {until}")
            } else {
                format!(":large_green_circle: *Active* until {until} · approved by {approved_by}")
            }
        }
        RequestState::Denied => format!(
            ":no_entry: *Denied* by {}",
            names(&r.reviews, ReviewDecision::Deny)
        ),
        RequestState::Withdrawn => {
            ":leftwards_arrow_with_hook: *Withdrawn* by the requester".into()
        }
        RequestState::Lapsed => ":zzz: *Lapsed*: nobody decided in time".into(),
        RequestState::Expired => format!(
            ":checkered_flag: *Expired* {}",
            r.not_after.map(when).unwrap_or_default()
        ),
        RequestState::Revoked => ":octagonal_sign: *Revoked* before it ended".into(),
        RequestState::Failed => format!(
            ":x: *Failed*: {}",
            clip(
                r.grant
                    .last_error
                    .as_deref()
                    .unwrap_or("the provider could not apply the grant"),
                500
            )
        ),
    };
    let (headline, text) = if r.breakglass {
        (
            format!(":rotating_light: *BREAK-GLASS* · *{who}* activated *`{what}`* for *{dur}* without review. A post-incident review is open."),
            format!("BREAK-GLASS: {who} activated {what} for {dur}"),
        )
    } else {
        (
            format!(":lock: *{who}* requests *`{what}`* for *{dur}*"),
            format!("Access request: {who} asks for {what} for {dur}"),
        )
    };
    let mut blocks = vec![section(headline)];
    if !description.is_empty() {
        blocks.push(context(clip(description, 500)));
    }
    blocks.push(section(format!("*Reason*\n{}", quote(&r.reason))));
    blocks.push(context(format!("Request `{}` · {status}", r.id)));
    if r.state == RequestState::Pending && !r.breakglass {
        blocks.push(buttons(APPROVE_REQUEST, DENY_REQUEST, r.id.as_str()));
    }
    Message {
        text: clip_plain(&text),
        blocks: Value::Array(blocks),
    }
}

/// The message about a run that needs approval: the exact argv, who, why,
/// its state, and Approve/Deny buttons while it is pending.
pub fn run_message(run: &Run) -> Message {
    let who = escape(run.requester.as_str());
    let what = match &run.operation {
        Some(o) => format!("operation *`{}`*", escape(o.as_str())),
        None => format!("*`{}`*", escape(run.tool.as_str())),
    };
    let approved_by = names(&run.reviews, ReviewDecision::Approve);
    let status = match run.state {
        RunState::Pending => format!(
            ":hourglass_flowing_sand: *Pending* · {}",
            approvals_so_far(&run.reviews, run.approvals.count)
        ),
        RunState::Approved => {
            format!(":white_check_mark: *Approved* by {approved_by} · waiting to start")
        }
        RunState::Running => format!(":gear: *Running* · approved by {approved_by}"),
        RunState::Succeeded => {
            format!(":white_check_mark: *Succeeded* · approved by {approved_by}")
        }
        RunState::Failed => format!(
            ":x: *Failed*{}{}",
            run.exit_code
                .map(|c| format!(" (exit {c})"))
                .unwrap_or_default(),
            run.error
                .as_deref()
                .map(|e| format!(": {}", clip(e, 500)))
                .unwrap_or_default()
        ),
        RunState::TimedOut => ":alarm_clock: *Timed out* and was killed".into(),
        RunState::Denied => format!(
            ":no_entry: *Denied* by {}",
            names(&run.reviews, ReviewDecision::Deny)
        ),
        RunState::Lapsed => ":zzz: *Lapsed*: nobody decided in time".into(),
        RunState::RateLimited => ":no_entry_sign: *Rate limited*".into(),
    };
    let argv = run.argv.join(" ");
    let mut blocks = vec![
        section(format!(":wrench: *{who}* wants to run {what}")),
        section(format!("```{}```", clip(&argv, MAX_USER_TEXT))),
        section(format!("*Reason*\n{}", quote(&run.reason))),
        context(format!("Run `{}` · {status}", run.id)),
    ];
    if run.state == RunState::Pending {
        blocks.push(buttons(APPROVE_RUN, DENY_RUN, run.id.as_str()));
    }
    Message {
        text: clip_plain(&format!(
            "Run approval: {who} wants to run {}",
            run.operation
                .as_ref()
                .map(|o| o.to_string())
                .unwrap_or_else(|| run.tool.to_string())
        )),
        blocks: Value::Array(blocks),
    }
}

/// A reason as a quote block, escaped and cut.
fn quote(reason: &str) -> String {
    if reason.trim().is_empty() {
        return "_none given_".into();
    }
    // `>` opens a quote only when we write it; the reason's own are escaped.
    // At most 40 lines, so the prefixes keep the section under Slack's limit.
    clip(reason, MAX_USER_TEXT)
        .lines()
        .take(40)
        .map(|l| format!("> {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn clip_plain(s: &str) -> String {
    // Already escaped by the callers' pieces; only the length is bounded here.
    if s.chars().count() <= MAX_FALLBACK {
        return s.to_string();
    }
    let mut t: String = s.chars().take(MAX_FALLBACK - 1).collect();
    // Never leave half an entity (`&am`) at the cut.
    if let Some(amp) = t.rfind('&') {
        if !t[amp..].contains(';') {
            t.truncate(amp);
        }
    }
    t.push('…');
    t
}

#[cfg(test)]
mod tests;
