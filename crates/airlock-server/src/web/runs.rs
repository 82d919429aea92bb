//! Tool-proxy runs: recent runs, one run with its transcript, and
//! approve/deny for runs awaiting approval via `proxy::review::review`.

use std::sync::Arc;

use airlock_core::run::{Run, RunId};
use airlock_core::Error;
use airlock_store::RunFilter;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Redirect, Response};

use super::html::Html;
use super::layout::{page, when, WebError};
use super::requests::{review_form_for, review_list, ReviewForm};
use super::web_session::{Posted, WebUser};
use crate::app::App;
use crate::html;
use airlock_service::proxy::may_read_output;
use airlock_service::surface::Surface;

/// Most transcript bytes shown on a page (the API serves the whole file).
const TRANSCRIPT_SHOWN: usize = 256 * 1024;

fn parse(id: &str) -> Result<RunId, WebError> {
    Ok(RunId::parse(id)?)
}

/// `GET /ui/runs`: recent runs, those awaiting this user's approval first.
pub async fn list(State(app): State<Arc<App>>, user: WebUser) -> Result<Response, WebError> {
    let filter = RunFilter {
        limit: 100,
        ..Default::default()
    };
    let mut runs = app.svc.db_untracked(move |s| s.list_runs(&filter)).await?;
    let p = &user.principal;
    runs.retain(|r| airlock_service::visibility::may_read_run(&app, p, r));
    let (mine_to_review, rest): (Vec<&Run>, Vec<&Run>) = runs
        .iter()
        .partition(|r| r.approvals.awaits_review_by(p, *r));
    let mut h = Html::default();
    html!(h, "<h1>Runs awaiting your approval</h1>");
    run_table(&mut h, &mine_to_review, "runs-to-review");
    html!(h, "<h1>Recent runs</h1>");
    run_table(&mut h, &rest, "runs");
    Ok(page(&user, "Runs", h))
}

fn run_table(h: &mut Html, runs: &[&Run], id: &'static str) {
    if runs.is_empty() {
        html!(h, "<p class=\"muted\">None.</p>");
        return;
    }
    html!(h, "<table id=\"" (id) "\"><thead><tr><th>Run</th><th>Command</th><th>Requester</th>"
        "<th>State</th><th>Created</th><th>Reason</th></tr></thead><tbody>");
    for r in runs {
        html!(h, "<tr><td><a href=\"/ui/runs/" (r.id) "\">" (r.id) "</a></td><td><code>" (r.argv.join(" "))
            "</code></td><td>" (r.requester) "</td><td><span class=\"state s-" (r.state) "\">" (r.state)
            "</span></td><td>" (when(r.created_at)) "</td><td class=\"reason\">" (r.reason) "</td></tr>");
    }
    html!(h, "</tbody></table>");
}

/// `GET /ui/runs/{id}`: the run, its reviews, and its transcript if this user may read it.
pub async fn detail(
    State(app): State<Arc<App>>,
    user: WebUser,
    Path(id): Path<String>,
) -> Result<Response, WebError> {
    let id = parse(&id)?;
    let lookup = id.clone();
    let r = app
        .svc
        .db(move |s| s.get_run(&lookup))
        .await?
        .filter(|r| airlock_service::visibility::may_read_run(&app, &user.principal, r))
        .ok_or_else(|| Error::not_found(format!("run `{id}`")))?;
    let p = &user.principal;
    let mut h = Html::default();
    html!(h, "<h1>Run " (r.id) "</h1><dl class=\"facts\">"
        "<dt>State</dt><dd><span class=\"state s-" (r.state) "\" id=\"state\">" (r.state) "</span></dd>"
        "<dt>Command</dt><dd><code>" (r.argv.join(" ")) "</code></dd>"
        "<dt>Tool</dt><dd>" (r.tool) "</dd><dt>Rule</dt><dd>" (r.rule) "</dd>"
        "<dt>Requester</dt><dd>" (r.requester) "</dd><dt>Reason</dt><dd class=\"reason\">" (r.reason) "</dd>"
        "<dt>Approvals</dt><dd>" (r.approvals.count) " from " (r.approvals.reviewers.join(", ")) "</dd>"
        "<dt>Created</dt><dd>" (when(r.created_at)) "</dd>");
    if let Some(op) = &r.operation {
        html!(h, "<dt>Operation</dt><dd>" (op) "</dd>");
    }
    if let Some(c) = r.exit_code {
        html!(h, "<dt>Exit code</dt><dd>" (c) "</dd>");
    }
    if let Some(e) = &r.error {
        html!(h, "<dt>Error</dt><dd>" (e) "</dd>");
    }
    if let Some(t) = r.lapses_at {
        html!(h, "<dt>Lapses at</dt><dd>" (when(t)) "</dd>");
    }
    html!(h, "</dl>");
    if let Some(d) = &r.dry_run {
        html!(h, "<h2>Dry run</h2><p><code>" (d.argv.join(" ")) "</code> exited "
            (d.exit_code.map(|c| c.to_string()).unwrap_or_else(|| "without status".into()))
            "</p><pre class=\"transcript\">" (d.output) "</pre>");
    }
    html!(h, "<h2>Reviews</h2>");
    review_list(&mut h, &r.reviews);
    if r.approvals.awaits_review_by(p, &r) {
        review_form_for(&mut h, "runs", &r.id, &user.csrf);
    }
    html!(h, "<h2>Transcript</h2>");
    if !may_read_output(p, &r) {
        html!(h, "<p class=\"muted\">Only the requester, a reviewer of this run or an admin can read its output.</p>");
    } else {
        let lookup = r.id.clone();
        match app.svc.db(move |s| s.run_transcript(&lookup)).await? {
            None => {
                html!(h, "<p class=\"muted\">No transcript yet (the run has not finished, or never ran).</p>");
            }
            Some(bytes) => {
                let shown = &bytes[..bytes.len().min(TRANSCRIPT_SHOWN)];
                html!(h, "<pre class=\"transcript\" id=\"transcript\">" (String::from_utf8_lossy(shown)) "</pre>");
                if bytes.len() > TRANSCRIPT_SHOWN || r.transcript_truncated {
                    html!(h, "<p class=\"muted\">Cut for display; the whole transcript: <code>GET /api/v1/runs/"
                        (r.id) "/transcript</code>.</p>");
                }
            }
        }
    }
    Ok(page(&user, "Run", h))
}

/// `POST /ui/runs/{id}/review`.
pub async fn review(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    Posted(user, f): Posted<ReviewForm>,
) -> Result<Response, WebError> {
    let (d, c) = f.parts()?;
    let run = airlock_service::proxy::review::review(
        &app.svc,
        &user.principal,
        parse(&id)?,
        d,
        c,
        Surface::Web,
    )
    .await?;
    Ok(Redirect::to(&format!("/ui/runs/{}", run.id)).into_response())
}
