//! The audit viewer: the chain's verification status (the same check as
//! `GET /api/v1/audit/verify`) and recent events, newest page first.

use std::sync::Arc;

use airlock_core::audit_chain::AuditEvent;
use axum::extract::{Query, State};
use axum::response::Response;
use serde::Deserialize;

use super::html::Html;
use super::layout::{page, WebError};
use super::web_session::WebUser;
use crate::app::App;
use crate::html;

/// Events per page.
const PAGE: u64 = 50;

/// `?before=SEQ` pages back through the chain.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    before: Option<u64>,
}

/// `GET /ui/audit`.
pub async fn page_handler(
    State(app): State<Arc<App>>,
    user: WebUser,
    q: Result<Query<AuditQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, WebError> {
    let Query(q) = q.map_err(|e| WebError::bad_input(e.body_text()))?;
    airlock_service::visibility::check_audit_reader(&app, &user.principal)?;
    let report = airlock_service::audit::verify_audit_chain(&app.svc).await?;
    let head = app.svc.db(|s| s.audit_head()).await?.unwrap_or(0);
    let end = q.before.unwrap_or(head + 1).min(head + 1);
    let start = end.saturating_sub(PAGE).max(1);
    let sealed = if end > start {
        let limit = (end - start) as u32;
        app.svc
            .db(move |s| s.audit_events(start - 1, limit))
            .await?
    } else {
        vec![]
    };
    let mut events: Vec<AuditEvent> = sealed
        .iter()
        .filter_map(|e| e.to_event())
        .filter(|e| e.seq >= start && e.seq < end)
        .collect();
    events.reverse();
    let mut h = Html::default();
    html!(h, "<h1>Audit log</h1>");
    if report.ok {
        html!(h, "<p class=\"flash ok\" id=\"verify\">Chain verified: " (report.events) " events, "
            (report.checkpoints_verified) " signed checkpoint(s) verified.</p>");
    } else {
        html!(h, "<p class=\"flash error\" id=\"verify\">Chain verification FAILED at event "
            (report.first_bad_seq.map(|s| s.to_string()).unwrap_or_else(|| "?".into())) ": "
            (report.problem.as_deref().unwrap_or("unknown problem"))
            ". Treat the log as tampered with and run `airlock audit verify` for details.</p>");
    }
    html!(h, "<table id=\"audit\"><thead><tr><th>#</th><th>At</th><th>Kind</th><th>Actor</th>"
        "<th>Subject</th><th>Data</th></tr></thead><tbody>");
    for e in &events {
        html!(h, "<tr><td>" (e.seq) "</td><td>" (e.at) "</td><td>" (e.kind) "</td><td>" (e.actor)
            "</td><td>" (e.subject) "</td><td><code>" (e.data) "</code></td></tr>");
    }
    html!(h, "</tbody></table><p class=\"pager\">");
    if start > 1 {
        html!(h, "<a href=\"/ui/audit?before=" (start) "\">Older</a> ");
    }
    if end <= head {
        html!(h, "<a href=\"/ui/audit\">Newest</a>");
    }
    html!(h, "</p>");
    Ok(page(&user, "Audit", h))
}
