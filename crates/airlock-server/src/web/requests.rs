//! Access-request pages: overview, the request form, "my requests" with live
//! state, one request's detail, and its review/revoke/withdraw forms. Every
//! action goes through `lifecycle` with `Surface::Web`.

use std::sync::Arc;

use airlock_core::approval::Reviewable;
use airlock_core::config::Entitlement;
use airlock_core::request::{Request, RequestId, RequestState, ReviewDecision};
use airlock_core::{Error, Principal};
use airlock_store::RequestFilter;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;

use super::html::Html;
use super::layout::{page, time_left, when, WebError};
use super::web_session::{Posted, WebUser};
use crate::app::App;
use crate::html;
use crate::problem::ApiError;
use airlock_service::lifecycle;
use airlock_service::surface::Surface;

type AppState = State<Arc<App>>;

/// Parses a request id from a path.
pub fn parse_id(s: &str) -> Result<RequestId, WebError> {
    Ok(RequestId::parse(s)?)
}

/// Loads one request or 404.
pub async fn load(app: &Arc<App>, id: &RequestId) -> Result<Request, WebError> {
    let lookup = id.clone();
    Ok(app
        .svc
        .db(move |s| s.get_request(&lookup))
        .await?
        .ok_or_else(|| Error::not_found(format!("request `{id}`")))?)
}

/// Requests of `who`, newest first.
pub async fn requests_of(
    app: &Arc<App>,
    who: &airlock_core::UserName,
    limit: u32,
) -> Result<Vec<Request>, WebError> {
    let filter = RequestFilter {
        requester: Some(who.clone()),
        limit,
        ..Default::default()
    };
    Ok(app.svc.db(move |s| s.list_requests(&filter)).await?)
}

/// A table of requests whose state and time left update live (app.js polls).
pub fn request_table(h: &mut Html, list: &[Request], now: time::OffsetDateTime, id: &'static str) {
    if list.is_empty() {
        html!(h, "<p class=\"muted\">None.</p>");
        return;
    }
    html!(h, "<table id=\"" (id) "\"><thead><tr><th>Request</th><th>Entitlement</th><th>Requester</th>"
        "<th>State</th><th>Time left</th><th>Reason</th></tr></thead><tbody>");
    for r in list {
        let na = r.not_after.map(when).unwrap_or_default();
        html!(h, "<tr data-request=\"" (r.id) "\"><td><a href=\"/ui/requests/" (r.id) "\">" (r.id) "</a></td>"
            "<td>" (r.entitlement) "</td><td>" (r.requester) "</td>"
            "<td><span class=\"state s-" (r.state) "\" data-field=\"state\">" (r.state) "</span></td>"
            "<td data-field=\"time-left\" data-not-after=\"" (na) "\">" (time_left(now, r.not_after)) "</td>"
            "<td class=\"reason\">" (r.reason) "</td></tr>");
    }
    html!(h, "</tbody></table>");
}

/// `GET /ui/`: my recent requests and how many reviews wait for me.
pub async fn overview(State(app): AppState, user: WebUser) -> Result<Response, WebError> {
    let mine = requests_of(&app, &user.principal.name, 10).await?;
    let waiting = super::reviews::queue_for(&app, &user.principal)
        .await?
        .len();
    let mut h = Html::default();
    html!(h, "<h1>Hello, " (user.principal.name) "</h1><p class=\"cards\">"
        "<a class=\"card\" href=\"/ui/reviews\"><strong id=\"waiting-reviews\">" (waiting)
        "</strong> review(s) waiting for you</a>"
        "<a class=\"card\" href=\"/ui/request\">Request access</a></p>"
        "<h2>My recent requests</h2>");
    request_table(&mut h, &mine, app.now(), "my-requests");
    Ok(page(&user, "Overview", h))
}

/// Entitlements `who` may ask for through the form (break-glass stays on the CLI).
fn requestable<'a>(app: &'a App, who: &'a Principal) -> impl Iterator<Item = &'a Entitlement> {
    app.config.entitlements.values().filter(move |e| {
        !e.breakglass && (e.requesters.is_empty() || e.requesters.iter().any(|r| who.matches(r)))
    })
}

/// The request form's fields.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RequestForm {
    #[serde(default)]
    entitlement: String,
    #[serde(default)]
    duration: String,
    #[serde(default)]
    reason: String,
}

/// `GET /ui/request`.
pub async fn form(State(app): AppState, user: WebUser) -> Response {
    form_page(&app, &user, &RequestForm::default(), None)
}

fn form_page(app: &App, user: &WebUser, f: &RequestForm, error: Option<&str>) -> Response {
    let mut h = Html::default();
    html!(h, "<h1>Request access</h1>");
    if let Some(e) = error {
        html!(h, "<p class=\"flash error\" id=\"form-error\">" (e) "</p>");
    }
    html!(h, "<form method=\"post\" action=\"/ui/request\" id=\"request-form\">"
        "<input type=\"hidden\" name=\"csrf\" value=\"" (user.csrf) "\">"
        "<fieldset><legend>Entitlement</legend>");
    let mut any = false;
    for e in requestable(app, &user.principal) {
        any = true;
        let rule = app.approval_rule(&e.approvals, e.service.as_ref());
        let checked = if f.entitlement == e.name.as_str() {
            " checked"
        } else {
            ""
        };
        html!(h, "<label class=\"pick\"><input type=\"radio\" name=\"entitlement\" value=\"" (e.name) "\"");
        h.raw(checked);
        html!(h, " required><span class=\"name\">" (e.name) "</span>"
            "<span class=\"desc\">" (e.description) "</span><span class=\"rules\">max " (e.max_duration)
            " · " (rule.count) " approval(s) from " (rule.reviewers.join(", ")));
        if e.reason.required {
            html!(h, " · reason required");
        }
        if let Some(p) = &e.reason.pattern {
            html!(h, " · reason must match <code>" (p.as_str()) "</code>");
        }
        if e.mfa {
            html!(h, " · needs MFA sign-in");
        }
        if let Some(s) = &e.service {
            html!(h, " · service "(s));
        }
        html!(h, "</span></label>");
    }
    if !any {
        html!(
            h,
            "<p class=\"muted\">No entitlement you may request is configured.</p>"
        );
    }
    html!(h, "</fieldset><label for=\"duration\">Duration</label>"
        "<input id=\"duration\" name=\"duration\" placeholder=\"30m\" maxlength=\"16\" required value=\"" (f.duration) "\">"
        "<label for=\"reason\">Reason</label>"
        "<textarea id=\"reason\" name=\"reason\" maxlength=\"1000\" rows=\"3\">" (f.reason) "</textarea>"
        "<button type=\"submit\" class=\"primary\">Request</button></form>");
    page(user, "Request access", h)
}

/// `POST /ui/request`: creates the request, or shows the form again with why not.
pub async fn create(
    State(app): AppState,
    Posted(user, f): Posted<RequestForm>,
) -> Result<Response, WebError> {
    match lifecycle::create(
        &app.svc,
        &user.principal,
        &f.entitlement,
        &f.duration,
        &f.reason,
        false,
        None,
    )
    .await
    .map_err(ApiError::from)
    {
        Ok(r) => Ok(Redirect::to(&format!("/ui/requests/{}", r.id)).into_response()),
        Err(e) if e.status.is_client_error() => {
            let mut resp = form_page(&app, &user, &f, Some(&e.detail));
            *resp.status_mut() = e.status;
            Ok(resp)
        }
        Err(e) => Err(e.into()),
    }
}

/// `GET /ui/requests`: my requests, live.
pub async fn mine(State(app): AppState, user: WebUser) -> Result<Response, WebError> {
    let list = requests_of(&app, &user.principal.name, 100).await?;
    let mut h = Html::default();
    html!(h, "<h1>My requests</h1>");
    request_table(&mut h, &list, app.now(), "my-requests");
    Ok(page(&user, "My requests", h))
}

/// `GET /ui/requests/{id}`.
pub async fn detail(
    State(app): AppState,
    user: WebUser,
    Path(id): Path<String>,
) -> Result<Response, WebError> {
    let r = load(&app, &parse_id(&id)?).await?;
    let p = &user.principal;
    if !airlock_service::visibility::may_read_request(&app, p, &r) {
        return Err(airlock_service::visibility::hidden(format!("request `{}`", r.id)).into());
    }
    let now = app.now();
    let mut h = Html::default();
    let na = r.not_after.map(when).unwrap_or_default();
    html!(h, "<h1>Request " (r.id) "</h1><dl class=\"facts\" id=\"facts\" data-request=\"" (r.id) "\">"
        "<dt>State</dt><dd><span class=\"state s-" (r.state) "\" data-field=\"state\" id=\"state\">" (r.state) "</span></dd>"
        "<dt>Entitlement</dt><dd>" (r.entitlement) "</dd><dt>Requester</dt><dd>" (r.requester) "</dd>"
        "<dt>Reason</dt><dd class=\"reason\" id=\"reason\">" (r.reason) "</dd>"
        "<dt>Duration</dt><dd>" (r.requested_duration) "</dd><dt>Created</dt><dd>" (when(r.created_at)) "</dd>"
        "<dt>Grant window</dt><dd data-field=\"window\">" (r.not_before.map(when).unwrap_or_default()) " – " (na) "</dd>"
        "<dt>Time left</dt><dd data-field=\"time-left\" id=\"time-left\" data-not-after=\"" (na) "\">" (time_left(now, r.not_after)) "</dd>"
        "<dt>Provider</dt><dd data-field=\"grant\">" (grant_text(&r.grant)) "</dd></dl><h2>Reviews</h2>");
    review_list(&mut h, &r.reviews);
    let rule = app
        .config
        .entitlements
        .get(&r.entitlement)
        .map(|e| app.approval_rule(&e.approvals, e.service.as_ref()));
    let reviewer = rule.as_ref().is_some_and(|rule| rule.names_reviewer(p));
    // The form shows exactly when the review would be taken (never one's own,
    // never twice); admins may decide where policy lets them.
    let may_review = rule.as_ref().is_some_and(|rule| {
        rule.awaits_review_by(p, &r)
            || (p.admin && r.awaits_review() && rule.check_reviewer(p, &r).is_ok())
    });
    let action = |h: &mut Html,
                  what: &'static str,
                  label: &'static str,
                  class: &'static str,
                  when: &'static str| {
        html!(h, "<form method=\"post\" class=\"inline\" data-when=\"" (when) "\" action=\"/ui/requests/" (r.id) "/" (what) "\">"
            "<input type=\"hidden\" name=\"csrf\" value=\"" (user.csrf) "\">"
            "<button type=\"submit\" class=\"" (class) "\" id=\"" (what) "\">" (label) "</button></form>");
    };
    if may_review {
        review_form(&mut h, &r.id, &user.csrf);
    }
    if r.state == RequestState::Pending && r.requester == p.name {
        action(&mut h, "withdraw", "Withdraw", "", "pending");
    }
    if r.state == RequestState::Active && (r.requester == p.name || reviewer || p.admin) {
        action(&mut h, "revoke", "Revoke now", "danger", "active");
    }
    Ok(page(&user, "Request", h))
}

/// The provider's progress in words (phase, and the last error if any).
fn grant_text(g: &airlock_core::request::GrantStatus) -> String {
    let phase = serde_json::to_value(g.phase)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default();
    match &g.last_error {
        Some(e) => format!("{phase} (last error: {e})"),
        None => phase,
    }
}

/// Reviews as a list (who, decision, comment, when).
pub fn review_list(h: &mut Html, reviews: &[airlock_core::request::Review]) {
    if reviews.is_empty() {
        html!(h, "<p class=\"muted\" id=\"reviews\">No reviews yet.</p>");
        return;
    }
    html!(h, "<ul id=\"reviews\">");
    for v in reviews {
        let d = match v.decision {
            ReviewDecision::Approve => "approved",
            ReviewDecision::Deny => "denied",
        };
        html!(h, "<li><strong>" (v.reviewer) "</strong> " (d) " at " (when(v.at)));
        if let Some(c) = &v.comment {
            html!(h, ": <q>" (c) "</q>");
        }
        html!(h, "</li>");
    }
    html!(h, "</ul>");
}

/// Approve/deny with an optional comment, posting to `/ui/{kind}/{id}/review`.
pub fn review_form_for(h: &mut Html, kind: &'static str, id: &dyn std::fmt::Display, csrf: &str) {
    html!(h, "<form method=\"post\" class=\"review\" data-when=\"pending\" action=\"/ui/" (kind) "/" (id) "/review\">"
        "<input type=\"hidden\" name=\"csrf\" value=\"" (csrf) "\">"
        "<input name=\"comment\" maxlength=\"1000\" placeholder=\"Comment (optional)\" aria-label=\"Comment\">"
        "<button type=\"submit\" name=\"decision\" value=\"approve\" class=\"primary approve\">Approve</button>"
        "<button type=\"submit\" name=\"decision\" value=\"deny\" class=\"danger deny\">Deny</button></form>");
}

fn review_form(h: &mut Html, id: &RequestId, csrf: &str) {
    review_form_for(h, "requests", id, csrf);
}

/// Fields of a review form.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReviewForm {
    pub decision: String,
    #[serde(default)]
    pub comment: String,
}

impl ReviewForm {
    /// The decision and the comment (empty = none).
    pub fn parts(self) -> Result<(ReviewDecision, Option<String>), WebError> {
        let d = ReviewDecision::parse(&self.decision)
            .map_err(|_| WebError::bad_input("decision must be approve or deny"))?;
        let c = self.comment.trim();
        Ok((d, (!c.is_empty()).then(|| c.to_string())))
    }
}

/// `POST /ui/requests/{id}/review`.
pub async fn review(
    State(app): AppState,
    Path(id): Path<String>,
    Posted(user, f): Posted<ReviewForm>,
) -> Result<Response, WebError> {
    let id = parse_id(&id)?;
    let (d, c) = f.parts()?;
    let r = lifecycle::review(&app.svc, &user.principal, id, d, c, Surface::Web).await?;
    Ok(Redirect::to(&format!("/ui/requests/{}", r.id)).into_response())
}

/// A form with only the CSRF field.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Empty {}

/// `POST /ui/requests/{id}/revoke`.
pub async fn revoke(
    State(app): AppState,
    Path(id): Path<String>,
    Posted(user, _): Posted<Empty>,
) -> Result<Response, WebError> {
    let r = lifecycle::revoke(&app.svc, &user.principal, parse_id(&id)?, None).await?;
    Ok(Redirect::to(&format!("/ui/requests/{}", r.id)).into_response())
}

/// `POST /ui/requests/{id}/withdraw`.
pub async fn withdraw(
    State(app): AppState,
    Path(id): Path<String>,
    Posted(user, _): Posted<Empty>,
) -> Result<Response, WebError> {
    let r = lifecycle::withdraw(&app.svc, &user.principal, parse_id(&id)?).await?;
    Ok(Redirect::to(&format!("/ui/requests/{}", r.id)).into_response())
}
