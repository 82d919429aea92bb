//! Human-readable rendering of API objects; `--output json` bypasses this.

use airlock_api::requests::{RequestView, ReviewView};
use serde_json::Value;

/// One review, as request and run details show it (`bob approve at T — why`).
pub fn review_line(v: &ReviewView) -> String {
    format!(
        "review: {} {} at {}{}",
        v.reviewer,
        v.decision,
        v.at,
        v.comment
            .as_deref()
            .map(|c| format!(" — {c}"))
            .unwrap_or_default()
    )
}

/// One line for a request.
pub fn request_line(r: &RequestView) -> String {
    let bg = if r.breakglass { "  BREAK-GLASS" } else { "" };
    let until = match &r.not_after {
        Some(t) => format!("  until {t}"),
        None => String::new(),
    };
    format!(
        "{}  {:<9}  {}  by {}  ({}s){until}{bg}",
        r.id, r.state, r.entitlement, r.requester, r.requested_duration
    )
}

/// A detailed view of one request.
pub fn request_detail(r: &RequestView) -> String {
    let mut out = request_line(r);
    out.push_str(&format!("\n  reason: {}", r.reason));
    for v in &r.reviews {
        out.push_str(&format!("\n  {}", review_line(v)));
    }
    if let Some(err) = &r.grant.last_error {
        out.push_str(&format!("\n  last provider error: {err}"));
    }
    out
}

/// Requests, one line each.
pub fn request_list(rs: &[RequestView]) -> String {
    if rs.is_empty() {
        "no requests".into()
    } else {
        rs.iter().map(request_line).collect::<Vec<_>>().join("\n")
    }
}

/// `airlock drift` as text: one block per provider.
pub fn drift_report(v: &Value) -> String {
    let mut out = Vec::new();
    for p in v["providers"].as_array().into_iter().flatten() {
        let name = p["provider"].as_str().unwrap_or("");
        let kind = p["kind"].as_str().unwrap_or("");
        let orphaned = p["orphaned"].as_array().map(Vec::len).unwrap_or(0);
        let standing = p["standing"].as_array().map(Vec::len).unwrap_or(0);
        out.push(format!(
            "{name} ({kind}): {orphaned} without a grant, {standing} standing outside airlock"
        ));
        for a in p["orphaned"].as_array().into_iter().flatten() {
            out.push(format!(
                "  no grant   {} (the reconciler removes it)",
                a["account"].as_str().unwrap_or("")
            ));
        }
        for s in p["standing"].as_array().into_iter().flatten() {
            out.push(format!(
                "  standing   {} holds {}: {}",
                s["principal"].as_str().unwrap_or(""),
                s["entitlement"].as_str().unwrap_or(""),
                s["detail"].as_str().unwrap_or("")
            ));
        }
        if let Some(e) = p["error"].as_str() {
            out.push(format!("  incomplete: {e}"));
        }
    }
    if out.is_empty() {
        out.push("no providers".into());
    }
    out.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_detail_reads_as_before() {
        let r: RequestView = serde_json::from_value(serde_json::json!({
            "id": "abcdefgh23", "entitlement": "pg-read", "requester": "alice",
            "reason": "INC-1", "state": "active", "requested_duration": 1800,
            "not_before": "2026-12-03T10:00:00Z", "not_after": "2026-12-03T10:30:00Z",
            "breakglass": true, "post_review_closed": false,
            "reviews": [
                {"reviewer": "bob", "decision": "approve", "comment": null, "at": "2026-12-03T10:01:00Z"},
                {"reviewer": "carol", "decision": "deny", "comment": "no", "at": "2026-12-03T10:02:00Z"},
            ],
            "grant": {"phase": "applied", "attempts": 1, "last_error": "timeout", "next_attempt_at": null},
            "created_at": "2026-12-03T09:59:00Z", "updated_at": "2026-12-03T10:02:00Z",
        }))
        .unwrap();
        let want = [
            "abcdefgh23  active     pg-read  by alice  (1800s)  until 2026-12-03T10:30:00Z  BREAK-GLASS",
            "  reason: INC-1",
            "  review: bob approve at 2026-12-03T10:01:00Z",
            "  review: carol deny at 2026-12-03T10:02:00Z — no",
            "  last provider error: timeout",
        ]
        .join("\n");
        assert_eq!(request_detail(&r), want);
        assert_eq!(request_list(&[]), "no requests");
    }
}
