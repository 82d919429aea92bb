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

/// `airlock status`: what is mine and what waits for me.
#[derive(serde::Serialize)]
pub struct Status {
    /// My grants that are active now.
    pub active: Vec<RequestView>,
    /// Pending requests I may review.
    pub to_review: Vec<RequestView>,
    /// Break-glass grants whose post-incident review I may close.
    pub post_reviews: Vec<RequestView>,
}

/// Time left until an RFC 3339 instant, as `1h 05m` / `4m 10s` / `ended`.
pub fn time_left(until: &str, now: time::OffsetDateTime) -> String {
    let Ok(t) = time::OffsetDateTime::parse(until, &time::format_description::well_known::Rfc3339)
    else {
        return "?".into();
    };
    let secs = (t - now).whole_seconds();
    match secs {
        s if s <= 0 => "ended".into(),
        s if s >= 3600 => format!("{}h {:02}m", s / 3600, s % 3600 / 60),
        s => format!("{}m {:02}s", s / 60, s % 60),
    }
}

/// `airlock status` as text: three short sections, each saying what to do.
pub fn status(s: &Status, now: time::OffsetDateTime) -> String {
    let mut out = Vec::new();
    if s.active.is_empty() {
        out.push("no active grants (airlock request ENT --for 30m --reason …)".to_string());
    } else {
        out.push("active grants:".into());
        for r in &s.active {
            let left = r
                .not_after
                .as_deref()
                .map_or("?".into(), |t| time_left(t, now));
            out.push(format!(
                "  {}  {}  {left} left  (airlock credentials {})",
                r.id, r.entitlement, r.id
            ));
        }
    }
    if s.to_review.is_empty() {
        out.push("nothing waits for your review".into());
    } else {
        out.push("waiting for your review (airlock review ID --approve|--deny):".into());
        for r in &s.to_review {
            out.push(format!(
                "  {}  {}  by {}: {}",
                r.id, r.entitlement, r.requester, r.reason
            ));
        }
    }
    if !s.post_reviews.is_empty() {
        out.push(
            "break-glass post-incident reviews to close (airlock review ID --approve):".into(),
        );
        for r in &s.post_reviews {
            out.push(format!(
                "  {}  {}  by {}: {}",
                r.id, r.entitlement, r.requester, r.reason
            ));
        }
    }
    out.join("\n")
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

#[cfg(test)]
mod status_tests {
    use super::*;
    use time::macros::datetime;

    fn req(id: &str, not_after: Option<&str>, breakglass: bool) -> RequestView {
        serde_json::from_value(serde_json::json!({
            "id": id, "entitlement": "pg-read", "requester": "alice", "reason": "INC-9",
            "state": "active", "requested_duration": 3600, "not_before": null,
            "not_after": not_after, "breakglass": breakglass, "post_review_closed": false,
            "reviews": [], "grant": {"phase": "applied", "attempts": 0, "last_error": null,
            "next_attempt_at": null}, "created_at": "2026-12-04T09:00:00Z",
            "updated_at": "2026-12-04T09:00:00Z",
        }))
        .unwrap()
    }

    #[test]
    fn time_left_reads_like_a_clock_and_never_goes_negative() {
        let now = datetime!(2026-12-04 10:00:00 UTC);
        assert_eq!(time_left("2026-12-04T11:05:30Z", now), "1h 05m");
        assert_eq!(time_left("2026-12-04T10:04:10Z", now), "4m 10s");
        assert_eq!(time_left("2026-12-04T09:59:59Z", now), "ended");
        assert_eq!(time_left("soon", now), "?");
    }

    #[test]
    fn status_names_each_section_and_what_to_do() {
        let now = datetime!(2026-12-04 10:00:00 UTC);
        let empty = Status {
            active: vec![],
            to_review: vec![],
            post_reviews: vec![],
        };
        assert_eq!(
            status(&empty, now),
            "no active grants (airlock request ENT --for 30m --reason …)\nnothing waits for your review"
        );
        let full = Status {
            active: vec![req("a1", Some("2026-12-04T10:30:00Z"), false)],
            to_review: vec![req("p1", None, false)],
            post_reviews: vec![req("b1", Some("2026-12-04T10:10:00Z"), true)],
        };
        let text = status(&full, now);
        assert!(
            text.contains("  a1  pg-read  30m 00s left  (airlock credentials a1)"),
            "{text}"
        );
        assert!(
            text.contains("waiting for your review")
                && text.contains("  p1  pg-read  by alice: INC-9")
        );
        assert!(text.contains("post-incident reviews to close") && text.contains("  b1  "));
    }
}
