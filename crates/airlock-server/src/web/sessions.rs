//! Gateway sessions: the ones this user may read (their own, those of
//! entitlements they review; all for admins and auditors), and one session
//! with its query log, so a reviewer sees what was done with a grant.

use std::sync::Arc;

use airlock_core::session::{Session, SessionId, SessionKind};
use axum::extract::{Path, State};
use axum::response::Response;

use super::html::Html;
use super::layout::{page, when, WebError};
use super::web_session::WebUser;
use crate::app::App;
use crate::html;
use airlock_service::gateway;

/// Most query-log lines shown on a page (`airlock session events` has them all).
const LINES_SHOWN: usize = 1000;

fn session_table(h: &mut Html, sessions: &[Session]) {
    if sessions.is_empty() {
        html!(h, "<p class=\"muted\">None.</p>");
        return;
    }
    html!(h, "<table id=\"sessions\"><thead><tr><th>Session</th><th>Kind</th><th>Entitlement</th>"
        "<th>User</th><th>Started</th><th>Ended</th><th>Bytes up / down</th><th>End reason</th></tr></thead><tbody>");
    for s in sessions {
        let ended = s.ended_at.map(when).unwrap_or_else(|| "open".into());
        let reason = s.end_reason.map(|r| r.as_str()).unwrap_or("");
        html!(h, "<tr><td><a href=\"/ui/sessions/" (s.id) "\">" (s.id) "</a></td><td>" (s.kind.as_str())
            "</td><td>" (s.entitlement) "</td><td>" (s.user) "</td><td>" (when(s.started_at)) "</td><td>"
            (ended) "</td><td>" (s.bytes_up) " / " (s.bytes_down) "</td><td>" (reason) "</td></tr>");
    }
    html!(h, "</tbody></table>");
}

/// `GET /ui/sessions`: recent gateway sessions this user may read.
pub async fn list(State(app): State<Arc<App>>, user: WebUser) -> Result<Response, WebError> {
    let sessions = gateway::list(&app.svc, &user.principal, None, 200).await?;
    let mut h = Html::default();
    html!(h, "<h1>Gateway sessions</h1><p class=\"muted\">Connections made with <code>airlock connect</code>: "
        "the gateway held the credential and recorded every statement.</p>");
    session_table(&mut h, &sessions);
    Ok(page(&user, "Sessions", h))
}

/// Most terminal text shown without the player (`airlock session play` has it all).
const TERMINAL_SHOWN: usize = 256 * 1024;

/// An SSH session's terminal: what it showed as text (escapes dropped), and
/// a player (app.js) that replays the asciicast recording at its pace.
fn terminal(h: &mut Html, s: &Session, recording: &[u8]) {
    let (text, cut) = gateway::cast::plain_text(recording, TERMINAL_SHOWN);
    html!(h, "<h2>Terminal</h2>");
    if text.is_empty() {
        html!(h, "<p class=\"muted\">Nothing recorded (yet).</p>");
        return;
    }
    html!(h, "<p class=\"player-controls\" hidden><button type=\"button\" id=\"play\">Play</button> "
        "<label>speed <select id=\"speed\"><option value=\"1\">1\u{d7}</option><option value=\"4\">4\u{d7}</option>"
        "<option value=\"16\">16\u{d7}</option></select></label></p>"
        "<pre class=\"transcript\" id=\"terminal\" data-recording=\"/api/v1/sessions/" (s.id) "/recording\">" (text) "</pre>");
    if cut {
        html!(h, "<p class=\"muted\">The rest: <code>airlock session play " (s.id) "</code></p>");
    }
    html!(h, "<p class=\"muted\">Recording (asciicast v2): <a href=\"/api/v1/sessions/" (s.id) "/recording\">download</a>, "
        "or <code>airlock session play " (s.id) "</code></p>");
}

/// `GET /ui/sessions/{id}`: one session and its query log.
pub async fn detail(
    State(app): State<Arc<App>>,
    user: WebUser,
    Path(id): Path<String>,
) -> Result<Response, WebError> {
    let id = SessionId::parse(&id)?;
    let (s, log) = gateway::recording(&app.svc, &user.principal, id).await?;
    let mut h = Html::default();
    let ended = s.ended_at.map(when).unwrap_or_else(|| "open".into());
    html!(h, "<h1>Session " (s.id) "</h1><dl class=\"facts\">"
        "<dt>Grant</dt><dd><a href=\"/ui/requests/" (s.request_id) "\">" (s.request_id) "</a> (" (s.entitlement) ")</dd>"
        "<dt>User</dt><dd>" (s.user) "</dd><dt>Kind</dt><dd>" (s.kind.as_str()) "</dd>"
        "<dt>Started</dt><dd>" (when(s.started_at)) "</dd><dt>Ended</dt><dd id=\"ended\">" (ended) "</dd>"
        "<dt>End reason</dt><dd id=\"end-reason\">" (s.end_reason.map(|r| r.as_str()).unwrap_or("")) "</dd>"
        "<dt>Bytes up / down</dt><dd>" (s.bytes_up) " / " (s.bytes_down) "</dd>"
        "<dt>Recording SHA-256</dt><dd><code>" (s.recording_sha256.as_deref().unwrap_or("(when it ends)")) "</code></dd></dl>");
    if s.ended_at.is_none() {
        html!(h, "<p class=\"muted\">Reviewers can end it now: <code>airlock session terminate " (s.id) "</code></p>");
    }
    if s.kind == SessionKind::Ssh {
        terminal(&mut h, &s, &log);
        return Ok(page(&user, "Session", h));
    }
    html!(h, "<h2>Statements</h2>");
    let text = String::from_utf8_lossy(&log);
    let lines: Vec<&str> = text.lines().collect();
    if lines.is_empty() {
        html!(h, "<p class=\"muted\">Nothing recorded (yet).</p>");
    } else {
        html!(h, "<table id=\"statements\"><thead><tr><th>At</th><th>ms</th><th>Rows</th><th>Tag</th>"
            "<th>Statement</th><th>Error</th></tr></thead><tbody>");
        for line in lines.iter().take(LINES_SHOWN) {
            let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
                continue;
            };
            let text = |k: &str| v[k].as_str().unwrap_or_default().to_string();
            let mut statement = text("statement");
            if let Some(p) = v["params"].as_array().filter(|p| !p.is_empty()) {
                statement.push_str(&format!(
                    "  -- params {}",
                    serde_json::Value::Array(p.clone())
                ));
            }
            html!(h, "<tr><td>" (text("at")) "</td><td>" (format!("{:.3}", v["duration_ms"].as_f64().unwrap_or(0.0)))
                "</td><td>" (v["rows"].as_u64().unwrap_or(0)) "</td><td>" (text("tag"))
                "</td><td><code>" (statement) "</code></td><td class=\"error\">" (text("error")) "</td></tr>");
        }
        html!(h, "</tbody></table>");
        if lines.len() > LINES_SHOWN {
            html!(h, "<p class=\"muted\">" (lines.len() - LINES_SHOWN) " more: <code>airlock session events " (s.id) "</code></p>");
        }
    }
    Ok(page(&user, "Session", h))
}
