//! Human-readable rendering of API objects; `--output json` bypasses this.

use serde_json::Value;

fn s<'a>(v: &'a Value, k: &str) -> &'a str {
    v.get(k).and_then(|x| x.as_str()).unwrap_or("-")
}

/// One line for a request.
pub fn request_line(r: &Value) -> String {
    let bg = if r.get("breakglass").and_then(Value::as_bool) == Some(true) {
        "  BREAK-GLASS"
    } else {
        ""
    };
    let until = match r.get("not_after").and_then(Value::as_str) {
        Some(t) => format!("  until {t}"),
        None => String::new(),
    };
    format!(
        "{}  {:<9}  {}  by {}  ({}s){until}{bg}",
        s(r, "id"),
        s(r, "state"),
        s(r, "entitlement"),
        s(r, "requester"),
        r.get("requested_duration")
            .and_then(Value::as_u64)
            .unwrap_or(0)
    )
}

/// A detailed view of one request.
pub fn request_detail(r: &Value) -> String {
    let mut out = request_line(r);
    out.push_str(&format!("\n  reason: {}", s(r, "reason")));
    if let Some(reviews) = r.get("reviews").and_then(Value::as_array) {
        for v in reviews {
            out.push_str(&format!(
                "\n  review: {} {} at {}{}",
                s(v, "reviewer"),
                s(v, "decision"),
                s(v, "at"),
                v.get("comment")
                    .and_then(Value::as_str)
                    .map(|c| format!(" — {c}"))
                    .unwrap_or_default()
            ));
        }
    }
    if let Some(err) = r.pointer("/grant/last_error").and_then(Value::as_str) {
        out.push_str(&format!("\n  last provider error: {err}"));
    }
    out
}
