//! Active grants with time left and a revoke button (the lifecycle decides
//! who may revoke; the button posts to the request's revoke form).

use std::sync::Arc;

use airlock_core::request::RequestState;
use airlock_store::RequestFilter;
use axum::extract::State;
use axum::response::Response;

use super::html::Html;
use super::layout::{page, time_left, when, WebError};
use super::web_session::WebUser;
use crate::app::App;
use crate::html;

async fn grants_page(app: &Arc<App>, user: &WebUser) -> Result<Response, WebError> {
    let filter = RequestFilter {
        state: Some(RequestState::Active),
        visible_to: airlock_service::visibility::request_scope(app, &user.principal),
        limit: 1000,
        ..Default::default()
    };
    let list = app.svc.db(move |s| s.list_requests(&filter)).await?;
    let now = app.now();
    let mut h = Html::default();
    html!(h, "<h1>Active grants</h1>");
    if list.is_empty() {
        html!(h, "<p class=\"muted\">No access is granted right now.</p>");
    } else {
        html!(h, "<table id=\"grants\"><thead><tr><th>Request</th><th>Entitlement</th><th>Holder</th>"
            "<th>Until</th><th>Time left</th><th></th></tr></thead><tbody>");
        for r in &list {
            let na = r.not_after.map(when).unwrap_or_default();
            html!(h, "<tr data-request=\"" (r.id) "\"><td><a href=\"/ui/requests/" (r.id) "\">" (r.id) "</a></td>"
                "<td>" (r.entitlement) "</td><td>" (r.requester) "</td><td>" (na) "</td>"
                "<td data-field=\"time-left\" data-not-after=\"" (na) "\">" (time_left(now, r.not_after)) "</td>"
                "<td><form method=\"post\" class=\"inline\" action=\"/ui/requests/" (r.id) "/revoke\">"
                "<input type=\"hidden\" name=\"csrf\" value=\"" (user.csrf) "\">"
                "<button type=\"submit\" class=\"danger\">Revoke</button></form></td></tr>");
        }
        html!(h, "</tbody></table>");
    }
    Ok(page(user, "Grants", h))
}

/// `GET /ui/grants`.
pub async fn list(State(app): State<Arc<App>>, user: WebUser) -> Result<Response, WebError> {
    grants_page(&app, &user).await
}
