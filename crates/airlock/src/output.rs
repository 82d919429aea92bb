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
