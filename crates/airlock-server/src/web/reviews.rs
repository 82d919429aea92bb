//! The reviewer queue: pending requests this user may decide (never their
//! own), each with what, who, why, how long, the requester's recent history
//! and one-click approve/deny; then open post-incident reviews of break-glass
//! access they may close. Decisions post to the request review form.

use std::sync::Arc;

use airlock_core::Principal;
use axum::extract::State;
use axum::response::Response;

use super::html::Html;
use super::layout::{human_secs, page, when, WebError};
use super::requests::{requests_of, review_form_for};
use super::web_session::WebUser;
use crate::app::App;
use crate::html;
use airlock_service::queue::ReviewQueue;

/// How many of the requester's earlier requests the queue shows.
const HISTORY: usize = 5;

/// What waits for `who`: the same queue as `GET /api/v1/requests?to_review=true`.
pub async fn queue_for(app: &Arc<App>, who: &Principal) -> Result<ReviewQueue, WebError> {
    Ok(airlock_service::queue::for_reviewer(&app.svc, who, 200).await?)
}

/// `GET /ui/reviews`.
pub async fn queue(State(app): State<Arc<App>>, user: WebUser) -> Result<Response, WebError> {
    let q = queue_for(&app, &user.principal).await?;
    let list = &q.pending;
    let now = app.now();
    let mut h = Html::default();
    html!(h, "<h1>Waiting for your review</h1>");
    if q.is_empty() {
        html!(
            h,
            "<p class=\"muted\" id=\"queue-empty\">Nothing waits for you.</p>"
        );
    }
    for r in list {
        let history = requests_of(&app, &r.requester, HISTORY as u32 + 1).await?;
        html!(h, "<article class=\"queue-item\" data-request=\"" (r.id) "\">"
            "<h2><a href=\"/ui/requests/" (r.id) "\">" (r.entitlement) "</a> for <span class=\"requester\">"
            (r.requester) "</span></h2><dl class=\"facts\"><dt>Why</dt><dd class=\"reason\">" (r.reason)
            "</dd><dt>How long</dt><dd>" (r.requested_duration) "</dd><dt>Asked</dt><dd>"
            (human_secs((now - r.created_at).whole_seconds())) " ago (" (when(r.created_at)) ")</dd>"
            "<dt>Approvals so far</dt><dd>" (r.reviews.len()) "</dd></dl>"
            "<h3>Recent requests by " (r.requester) "</h3><ul class=\"history\">");
        let mut shown = 0;
        for past in history.iter().filter(|p| p.id != r.id).take(HISTORY) {
            shown += 1;
            html!(h, "<li><a href=\"/ui/requests/" (past.id) "\">" (past.entitlement) "</a> "
                "<span class=\"state s-" (past.state) "\">" (past.state) "</span> " (when(past.created_at))
                " — <span class=\"reason\">" (past.reason) "</span></li>");
        }
        if shown == 0 {
            html!(h, "<li class=\"muted\">No earlier requests.</li>");
        }
        html!(h, "</ul>");
        review_form_for(&mut h, "requests", &r.id, &user.csrf);
        html!(h, "</article>");
    }
    if !q.post_incident.is_empty() {
        html!(h, "<section id=\"post-incident\"><h2>Post-incident reviews</h2>"
            "<p class=\"muted\">Break-glass access used without approval: approve if it was justified, deny if not. "
            "Either closes the review; it does not end the grant.</p>");
        for r in &q.post_incident {
            let ends = r.not_after.map(when).unwrap_or_default();
            // Not `data-request`: the live updater would hide the pending
            // items' forms when this one's state (active, expired…) arrives.
            html!(h, "<article class=\"queue-item post-incident\" data-post-review=\"" (r.id) "\">"
                "<h2><a href=\"/ui/requests/" (r.id) "\">" (r.entitlement) "</a> for <span class=\"requester\">"
                (r.requester) "</span></h2><dl class=\"facts\"><dt>Why</dt><dd class=\"reason\">" (r.reason)
                "</dd><dt>State</dt><dd><span class=\"state s-" (r.state) "\">" (r.state) "</span></dd>"
                "<dt>Activated</dt><dd>" (human_secs((now - r.created_at).whole_seconds())) " ago ("
                (when(r.created_at)) ")</dd><dt>Ends</dt><dd>" (ends) "</dd></dl>");
            html!(h, "<form method=\"post\" class=\"review\" action=\"/ui/requests/" (r.id) "/review\">"
                "<input type=\"hidden\" name=\"csrf\" value=\"" (user.csrf) "\">"
                "<input name=\"comment\" maxlength=\"1000\" placeholder=\"Comment (optional)\" aria-label=\"Comment\">"
                "<button type=\"submit\" name=\"decision\" value=\"approve\" class=\"primary approve\">Justified: close</button>"
                "<button type=\"submit\" name=\"decision\" value=\"deny\" class=\"danger deny\">Not justified: close</button></form>"
                "</article>");
        }
        html!(h, "</section>");
    }
    Ok(page(&user, "Reviews", h))
}
