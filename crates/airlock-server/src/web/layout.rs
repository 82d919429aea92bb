//! The page frame (head, navigation, sign-out form) and error pages that say
//! what went wrong and what to do next.

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};

use super::html::Html;
use super::web_session::WebUser;
use crate::html;
use crate::problem::ApiError;

/// Renders a full page for a signed-in user.
pub fn page(user: &WebUser, title: &str, body: Html) -> Response {
    render(StatusCode::OK, Some(user), title, body)
}

/// Renders a full page with any status; `user` adds the navigation.
pub fn render(status: StatusCode, user: Option<&WebUser>, title: &str, body: Html) -> Response {
    let mut h = Html::default();
    html!(h, "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
        "<title>" (title) " · airlock</title>"
        "<link rel=\"stylesheet\" href=\"/ui/static/app.css\">"
        "<script src=\"/ui/static/app.js\" defer></script></head><body>"
        "<header><nav><a class=\"brand\" href=\"/ui/\">airlock</a>");
    if let Some(u) = user {
        html!(h, "<a href=\"/ui/request\">Request access</a><a href=\"/ui/requests\">My requests</a>"
            "<a href=\"/ui/reviews\">Reviews</a><a href=\"/ui/grants\">Grants</a>"
            "<a href=\"/ui/runs\">Runs</a><a href=\"/ui/sessions\">Sessions</a><a href=\"/ui/audit\">Audit</a>"
            "<span class=\"who\">" (u.principal.name) "</span>"
            "<form method=\"post\" action=\"/ui/logout\" class=\"inline\">"
            "<input type=\"hidden\" name=\"csrf\" value=\"" (u.csrf) "\">"
            "<button type=\"submit\" class=\"link\">Sign out</button></form>");
    }
    html!(h, "</nav></header><main>");
    h.append(body);
    html!(h, "</main></body></html>\n");
    (
        status,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        h.into_string(),
    )
        .into_response()
}

/// An error shown as a readable page, or a redirect to sign in.
#[derive(Debug)]
pub struct WebError {
    pub status: StatusCode,
    /// What went wrong.
    pub what: String,
    /// What to do about it.
    pub todo: String,
}

impl WebError {
    /// An error page with a status, a description and a next step.
    pub fn new(status: StatusCode, what: impl Into<String>, todo: impl Into<String>) -> Self {
        WebError {
            status,
            what: what.into(),
            todo: todo.into(),
        }
    }

    /// 400 for a form or query that could not be read.
    pub fn bad_input(what: impl Into<String>) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            what,
            "Go back, correct the form and send it again.",
        )
    }

    /// 403 for a missing or wrong CSRF token.
    pub fn csrf() -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            "This form could not be verified (missing or outdated CSRF token).",
            "Reload the page and submit the form again.",
        )
    }
}

impl From<ApiError> for WebError {
    fn from(e: ApiError) -> Self {
        let todo = match e.status {
            StatusCode::UNAUTHORIZED => "Sign in again.",
            StatusCode::FORBIDDEN => "Ask someone who may do this, or an admin.",
            StatusCode::NOT_FOUND => "Check the link, or start from the overview.",
            StatusCode::CONFLICT => "Reload the page to see the current state.",
            StatusCode::SERVICE_UNAVAILABLE => "Try again in a few seconds.",
            s if s.is_server_error() => {
                "Try again; if it persists, tell an admin (the server log has details)."
            }
            _ => "Go back, correct the form and send it again.",
        };
        WebError::new(e.status, e.detail, todo)
    }
}

impl From<airlock_core::Error> for WebError {
    fn from(e: airlock_core::Error) -> Self {
        ApiError::from(e).into()
    }
}

impl From<airlock_service::ServiceError> for WebError {
    fn from(e: airlock_service::ServiceError) -> Self {
        ApiError::from(e).into()
    }
}

impl IntoResponse for WebError {
    fn into_response(self) -> Response {
        if self.status == StatusCode::UNAUTHORIZED {
            return Redirect::to("/ui/signin").into_response();
        }
        let title = self.status.canonical_reason().unwrap_or("Error");
        let mut h = Html::default();
        html!(h, "<section class=\"error\"><h1>" (title) "</h1><p class=\"what\">" (self.what)
            "</p><p class=\"todo\">" (self.todo) "</p><p><a href=\"/ui/\">Overview</a></p></section>");
        render(self.status, None, title, h)
    }
}

/// Formats a time for display (UTC, to the second).
pub fn when(t: time::OffsetDateTime) -> String {
    airlock_service::lifecycle::fmt_time(t)
}

/// "1h 5m" style rendering of seconds.
pub fn human_secs(secs: i64) -> String {
    if secs <= 0 {
        return "0s".into();
    }
    let (d, h, m, s) = (secs / 86400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{s}s"),
        (0, 0, _) => format!("{m}m {s}s"),
        (0, _, _) => format!("{h}h {m}m"),
        _ => format!("{d}d {h}h"),
    }
}

/// Time left until `not_after`, or "ended".
pub fn time_left(now: time::OffsetDateTime, not_after: Option<time::OffsetDateTime>) -> String {
    match not_after {
        Some(t) if t > now => format!("{} left", human_secs((t - now).whole_seconds())),
        Some(_) => "ended".into(),
        None => "—".into(),
    }
}
