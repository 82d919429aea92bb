//! Who is looking at a page (from the `airlock_session` cookie; no valid
//! session → redirect to sign in) and CSRF-checked, strictly parsed forms.

use std::sync::Arc;

use airlock_core::Principal;
use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::StatusCode;
use serde::de::DeserializeOwned;

use super::layout::WebError;
use crate::app::App;
use crate::auth::Caller;
use crate::session;

/// A signed-in web user.
pub struct WebUser {
    pub principal: Principal,
    /// The CSRF token every form of this session carries.
    pub csrf: String,
    /// The session token (to check CSRF against).
    token: String,
}

impl FromRequestParts<Arc<App>> for WebUser {
    type Rejection = WebError;

    async fn from_request_parts(parts: &mut Parts, app: &Arc<App>) -> Result<Self, WebError> {
        let unauth = || WebError::new(StatusCode::UNAUTHORIZED, "not signed in", "Sign in.");
        let token = session::cookie(&parts.headers, session::COOKIE)
            .ok_or_else(unauth)?
            .to_string();
        let Caller(principal) = Caller::from_token(app, &token)
            .await
            .map_err(|_| unauth())?;
        Ok(WebUser {
            principal,
            csrf: session::csrf_token(app, &token),
            token,
        })
    }
}

/// A form posted by a signed-in user: its `csrf` field matched the session
/// (else 403), and every other field parsed into `T` (unknown ones refused).
pub struct Posted<T>(pub WebUser, pub T);

impl<T: DeserializeOwned> FromRequest<Arc<App>> for Posted<T> {
    type Rejection = WebError;

    async fn from_request(req: Request, app: &Arc<App>) -> Result<Self, WebError> {
        let (mut parts, body) = req.into_parts();
        let user = WebUser::from_request_parts(&mut parts, app).await?;
        let req = Request::from_parts(parts, body);
        let bytes = Bytes::from_request(req, app).await.map_err(|e| {
            WebError::new(
                e.status(),
                format!("could not read the form: {}", e.body_text()),
                "Send a smaller form.",
            )
        })?;
        let (csrf, fields) = split_csrf(&bytes)?;
        if !session::csrf_ok(app, &user.token, &csrf) {
            return Err(WebError::csrf());
        }
        Ok(Posted(user, parse_fields(fields)?))
    }
}

/// Splits a urlencoded body into its single `csrf` value and the rest.
pub fn split_csrf(bytes: &[u8]) -> Result<(String, Vec<(String, String)>), WebError> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_bytes(bytes)
        .map_err(|e| WebError::bad_input(format!("the form could not be read: {e}")))?;
    let mut csrf = None;
    let mut rest = Vec::with_capacity(pairs.len());
    for (k, v) in pairs {
        if k == session::CSRF_FIELD {
            if csrf.replace(v).is_some() {
                return Err(WebError::csrf());
            }
        } else {
            rest.push((k, v));
        }
    }
    Ok((csrf.ok_or_else(WebError::csrf)?, rest))
}

/// Parses form fields into `T` (whose `deny_unknown_fields` refuses extras).
pub fn parse_fields<T: DeserializeOwned>(fields: Vec<(String, String)>) -> Result<T, WebError> {
    let text = serde_urlencoded::to_string(&fields)
        .map_err(|e| WebError::bad_input(format!("the form could not be read: {e}")))?;
    serde_urlencoded::from_str(&text)
        .map_err(|e| WebError::bad_input(format!("the form could not be read: {e}")))
}
