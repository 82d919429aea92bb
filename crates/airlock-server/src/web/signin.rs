//! The sign-in page: "Sign in with SSO" (when `[auth.oidc]` is configured,
//! handled by the OIDC module at `/ui/login`) and a form that turns a valid
//! API token into a browser session (development, tests, automation users).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::html::Html;
use super::layout::{render, WebError};
use super::web_session::{parse_fields, split_csrf};
use crate::app::App;
use crate::auth::{hash_token, new_token, Caller};
use crate::html;
use crate::session;

/// Cookie holding the sign-in form's CSRF value (double submit): no session
/// exists yet, and a forged sign-in would log the victim in as the attacker.
const SIGNIN_COOKIE: &str = "airlock_signin";

/// `GET /ui/signin`.
pub async fn page(State(app): State<Arc<App>>) -> Response {
    signin_page(&app, StatusCode::OK, None)
}

fn signin_page(app: &App, status: StatusCode, error: Option<&str>) -> Response {
    let csrf = new_token();
    let mut h = Html::default();
    html!(h, "<section class=\"signin\"><h1>Sign in to airlock</h1>");
    if let Some(e) = error {
        html!(h, "<p class=\"flash error\" id=\"signin-error\">" (e) "</p>");
    }
    if app.config.auth.oidc.is_some() {
        html!(h, "<p><a class=\"button primary\" id=\"sso\" href=\"/ui/login\">Sign in with SSO</a></p>"
            "<p class=\"muted\">Or use an API token:</p>");
    }
    html!(h, "<form method=\"post\" action=\"/ui/signin/token\" id=\"token-signin\">"
        "<input type=\"hidden\" name=\"csrf\" value=\"" (csrf) "\">"
        "<label for=\"token\">API token</label>"
        "<input type=\"password\" id=\"token\" name=\"token\" autocomplete=\"off\" maxlength=\"256\" required>"
        "<p class=\"muted\">From <code>airlock token create</code> (or the admin token <code>airlock serve --dev</code> prints).</p>"
        "<button type=\"submit\">Sign in with token</button></form></section>");
    let mut resp = render(status, None, "Sign in", h);
    if let Ok(v) = session::set_cookie(app, SIGNIN_COOKIE, &csrf, 3600).parse() {
        resp.headers_mut().append(header::SET_COOKIE, v);
    }
    resp
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenForm {
    token: String,
}

/// `POST /ui/signin/token`: a valid API token becomes a session cookie.
pub async fn with_token(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, WebError> {
    let (csrf, fields) = split_csrf(&body)?;
    let expected = session::cookie(&headers, SIGNIN_COOKIE).unwrap_or_default();
    if expected.is_empty() || !airlock_core::notify::signatures_equal(expected, &csrf) {
        return Err(WebError::csrf());
    }
    let form: TokenForm = parse_fields(fields)?;
    let token = form.token.trim();
    if token.is_empty() || token.len() > 256 {
        return Ok(signin_page(
            &app,
            StatusCode::BAD_REQUEST,
            Some("Enter an API token."),
        ));
    }
    let principal = match Caller::from_token(&app, token).await {
        Ok(Caller(p)) => p,
        Err(e) if e.status == StatusCode::UNAUTHORIZED => {
            return Ok(signin_page(&app, StatusCode::UNAUTHORIZED, Some(&e.detail)));
        }
        Err(e) => return Err(e.into()),
    };
    // The session never outlives the token it came from.
    let hash = hash_token(token);
    let rec = app.svc.db_untracked(move |s| s.find_token(&hash)).await?;
    let now = app.now();
    let ttl = rec
        .as_ref()
        .map(|r| r.expires_at - now)
        .unwrap_or(session::SESSION_TTL)
        .min(session::SESSION_TTL);
    // A start-up admin token has no row: its session is an admin session of its own.
    let origin = match &rec {
        Some(r) => session::Origin {
            groups: r.groups.clone(),
            admin: r.admin,
            mfa: r.mfa,
            parent: Some(r.hash),
        },
        None => session::Origin {
            groups: vec![],
            admin: principal.admin,
            mfa: false,
            parent: None,
        },
    };
    let secret = session::start(&app, &principal.name, origin, "token", ttl).await?;
    let mut resp = (StatusCode::SEE_OTHER, [(header::LOCATION, "/ui/")]).into_response();
    let h = resp.headers_mut();
    for c in [
        session::set_cookie(&app, session::COOKIE, &secret, ttl.whole_seconds()),
        session::clear_cookie(&app, SIGNIN_COOKIE),
    ] {
        if let Ok(v) = c.parse() {
            h.append(header::SET_COOKIE, v);
        }
    }
    Ok(resp)
}
