//! The web UI under `/ui`: server-rendered pages over the same `lifecycle`
//! and `proxy::review` calls as the API (no rule lives here), with session
//! cookies, CSRF-checked forms and a strict CSP. Sign-in via OIDC lives in
//! its own module; this one owns every other `/ui` route.

mod audit;
mod grants;
mod html;
mod layout;
mod requests;
mod reviews;
mod runs;
mod sessions;
mod signin;
mod web_session;

use std::sync::Arc;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;

use crate::app::App;

pub use html::Html;
pub use layout::WebError;
pub use web_session::{Posted, WebUser};

/// The strict Content-Security-Policy of every `/ui` response.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

const APP_CSS: &str = include_str!("static/app.css");
const APP_JS: &str = include_str!("static/app.js");

/// The web UI's routes (merged into the main router).
pub fn routes() -> Router<Arc<App>> {
    Router::new()
        .route("/ui", get(|| async { Redirect::to("/ui/") }))
        .route("/ui/", get(requests::overview))
        .route("/ui/signin", get(signin::page))
        .route("/ui/signin/token", post(signin::with_token))
        .route("/ui/request", get(requests::form).post(requests::create))
        .route("/ui/requests", get(requests::mine))
        .route("/ui/requests/{id}", get(requests::detail))
        .route("/ui/requests/{id}/review", post(requests::review))
        .route("/ui/requests/{id}/revoke", post(requests::revoke))
        .route("/ui/requests/{id}/withdraw", post(requests::withdraw))
        .route("/ui/reviews", get(reviews::queue))
        .route("/ui/grants", get(grants::list))
        .route("/ui/runs", get(runs::list))
        .route("/ui/runs/{id}", get(runs::detail))
        .route("/ui/runs/{id}/review", post(runs::review))
        .route("/ui/sessions", get(sessions::list))
        .route("/ui/sessions/{id}", get(sessions::detail))
        .route("/ui/audit", get(audit::page_handler))
        .route(
            "/ui/static/app.css",
            get(|| async { asset("text/css; charset=utf-8", APP_CSS) }),
        )
        .route(
            "/ui/static/app.js",
            get(|| async { asset("text/javascript; charset=utf-8", APP_JS) }),
        )
        .route("/ui/{*rest}", get(not_found).post(not_found))
        .layer(axum::middleware::map_response(security_headers))
}

fn asset(ctype: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, ctype),
            (header::CACHE_CONTROL, "public, max-age=300"),
        ],
        body,
    )
        .into_response()
}

async fn not_found() -> WebError {
    WebError::new(
        StatusCode::NOT_FOUND,
        "There is no such page.",
        "Start again from the overview.",
    )
}

/// Adds the security headers to every `/ui` response; pages (not the
/// static assets) are never cached, since they show live state.
async fn security_headers(mut resp: Response) -> Response {
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    resp
}
