//! The reviewer queue: pending requests this user may decide (never their
//! own), each with what, who, why, how long, the requester's recent history
//! and one-click approve/deny. Decisions post to the request review form.

use std::sync::Arc;

use airlock_core::request::{Request, RequestState};
use airlock_core::Principal;
use airlock_store::RequestFilter;
use axum::extract::State;
use axum::response::Response;

use super::html::Html;
use super::layout::{human_secs, page, when, WebError};
use super::requests::{requests_of, review_form_for};
use super::web_session::WebUser;
use crate::app::App;
use crate::html;

/// How many of the requester's earlier requests the queue shows.
const HISTORY: usize = 5;

/// Pending requests `who` is named to review and has not reviewed yet.
pub async fn queue_for(app: &Arc<App>, who: &Principal) -> Result<Vec<Request>, WebError> {
    let entitlements: Vec<String> = app
        .config
        .entitlements
        .values()
        .filter(|e| {
            !e.breakglass
                && app
                    .approval_rule(&e.approvals, e.service.as_ref())
                    .names_reviewer(who)
        })
        .map(|e| e.name.to_string())
        .collect();
    let filter = RequestFilter {
        state: Some(RequestState::Pending),
        entitlements: Some(entitlements),
        limit: 200,
        ..Default::default()
    };
    let mut list = app.db(move |s| s.list_requests(&filter)).await?;
    list.retain(|r| r.requester != who.name && !r.reviews.iter().any(|v| v.reviewer == who.name));
    Ok(list)
}

/// `GET /ui/reviews`.
pub async fn queue(State(app): State<Arc<App>>, user: WebUser) -> Result<Response, WebError> {
    let list = queue_for(&app, &user.principal).await?;
    let now = app.now();
    let mut h = Html::default();
    html!(h, "<h1>Waiting for your review</h1>");
    if list.is_empty() {
        html!(
            h,
            "<p class=\"muted\" id=\"queue-empty\">Nothing waits for you.</p>"
        );
    }
    for r in &list {
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
    Ok(page(&user, "Reviews", h))
}
