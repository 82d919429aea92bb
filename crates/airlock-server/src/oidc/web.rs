//! Web login: `GET /ui/login` sends the browser to the provider with PKCE
//! (S256), `state` and `nonce` kept in a short-lived HttpOnly cookie signed
//! with the server's MAC key; `GET /ui/oidc/callback` checks them, exchanges
//! the code and starts a session; `POST /ui/logout` ends it.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use rand::RngCore;
use sha2::{Digest, Sha256};

use super::idp::{clip, TokenOutcome};
use super::{configured, OidcError};
use crate::app::App;
use crate::auth::Caller;
use crate::session;

/// Cookie holding `state`, `nonce` and the PKCE verifier during a login.
pub const STATE_COOKIE: &str = "airlock_oidc";
/// How long a login may take at the provider.
const STATE_TTL_SECS: i64 = 600;
/// Where the browser lands after logging in.
const AFTER_LOGIN: &str = "/ui/";

pub(super) fn routes() -> Router<Arc<App>> {
    Router::new()
        .route("/ui/login", get(login))
        .route("/ui/oidc/callback", get(callback))
        .route("/ui/logout", post(logout))
}

fn random_b64(n: usize) -> String {
    let mut b = vec![0u8; n];
    rand::rngs::OsRng.fill_bytes(&mut b);
    B64.encode(b)
}

/// A small HTML page (login errors, logout); no scripts, strict CSP.
fn page(status: StatusCode, title: &str, text: &str) -> Response {
    let esc = |s: &str| {
        s.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
            .replace('"', "&quot;")
    };
    let body = format!(
        "<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>airlock: {t}</title></head>\
         <body><h1>{t}</h1><p id=\"message\">{m}</p><p><a href=\"/ui/login\">Sign in</a></p></body></html>",
        t = esc(title),
        m = esc(text)
    );
    let mut r = (status, body).into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'none'; frame-ancestors 'none'"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

fn error_page(e: OidcError) -> Response {
    match e {
        OidcError::Unavailable(m) => {
            tracing::warn!(error = %m, "OIDC login: provider unavailable");
            page(
                StatusCode::SERVICE_UNAVAILABLE,
                "Login unavailable",
                &format!(
                    "The identity provider cannot be used right now ({m}). Try again in a minute."
                ),
            )
        }
        OidcError::Internal(m) => {
            tracing::error!(error = %m, "OIDC login failed");
            page(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Login failed",
                "Internal error; the server log has details.",
            )
        }
        OidcError::Forbidden(m) => page(StatusCode::FORBIDDEN, "Login refused", &format!("{m}.")),
        other => {
            tracing::warn!(error = %other, "OIDC login refused");
            page(
                StatusCode::BAD_REQUEST,
                "Login failed",
                &format!("{other}. Start again from the sign-in link."),
            )
        }
    }
}

/// `{public_url}/ui/oidc/callback`; without `[server] public_url` only a
/// loopback `Host` is trusted (development and tests).
fn redirect_uri(app: &App, headers: &HeaderMap) -> Result<String, OidcError> {
    if let Some(u) = &app.config.server.public_url {
        return Ok(format!("{}/ui/oidc/callback", u.trim_end_matches('/')));
    }
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or_default();
    let loopback = ["127.0.0.1:", "localhost:", "[::1]:"]
        .iter()
        .any(|p| host.starts_with(p) && host[p.len()..].bytes().all(|b| b.is_ascii_digit()))
        || ["127.0.0.1", "localhost", "[::1]"].contains(&host);
    if !loopback {
        return Err(OidcError::Refused(
            "set [server] public_url so airlock knows its own address for the OIDC redirect".into(),
        ));
    }
    Ok(format!("http://{host}/ui/oidc/callback"))
}

/// The login cookie: `state.nonce.verifier.expires.mac`.
fn seal(app: &App, parts: &[&str]) -> String {
    let data = parts.join(".");
    let mac = B64.encode(app.keys.mac("oidc-state", data.as_bytes()));
    format!("{data}.{mac}")
}

fn unseal(app: &App, value: &str, now: i64) -> Result<(String, String, String), OidcError> {
    let lost = || {
        OidcError::Refused(
            "the login cookie is missing, expired or altered (did the login take more than 10 minutes, or were cookies blocked?)".into(),
        )
    };
    let (data, mac) = value.rsplit_once('.').ok_or_else(lost)?;
    let want = B64.encode(app.keys.mac("oidc-state", data.as_bytes()));
    if !airlock_core::notify::signatures_equal(&want, mac) {
        return Err(lost());
    }
    let p: Vec<&str> = data.split('.').collect();
    let [state, nonce, verifier, exp] = p[..] else {
        return Err(lost());
    };
    if exp.parse::<i64>().map_err(|_| lost())? < now {
        return Err(lost());
    }
    Ok((state.into(), nonce.into(), verifier.into()))
}

fn state_cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == STATE_COOKIE)
        .map(|(_, v)| v)
        .filter(|v| !v.is_empty() && v.len() <= 1024)
}

fn redirect(to: &str, cookies: &[String]) -> Response {
    let mut r = StatusCode::SEE_OTHER.into_response();
    let h = r.headers_mut();
    if let Ok(v) = HeaderValue::from_str(to) {
        h.insert(header::LOCATION, v);
    }
    for c in cookies {
        if let Ok(v) = HeaderValue::from_str(c) {
            h.append(header::SET_COOKIE, v);
        }
    }
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

async fn login(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    match start_login(&app, &headers, q.get("prompt").map(String::as_str)).await {
        Ok(r) => r,
        Err(e) => error_page(e),
    }
}

async fn start_login(
    app: &Arc<App>,
    headers: &HeaderMap,
    prompt: Option<&str>,
) -> Result<Response, OidcError> {
    let oidc = configured(app).map_err(|e| OidcError::Refused(e.detail))?;
    let d = oidc.idp.discovery().await?;
    let redirect_uri = redirect_uri(app, headers)?;
    let (state, nonce, verifier) = (random_b64(16), random_b64(16), random_b64(32));
    let challenge = B64.encode(Sha256::digest(verifier.as_bytes()));
    let scope = oidc.config.scopes.join(" ");
    let mut params = vec![
        ("response_type", "code"),
        ("client_id", oidc.config.client_id.as_str()),
        ("redirect_uri", redirect_uri.as_str()),
        ("scope", scope.as_str()),
        ("state", state.as_str()),
        ("nonce", nonce.as_str()),
        ("code_challenge", challenge.as_str()),
        ("code_challenge_method", "S256"),
    ];
    // `?prompt=login` forces a fresh sign-in (step up to MFA).
    if prompt == Some("login") {
        params.push(("prompt", "login"));
    }
    let query =
        serde_urlencoded::to_string(&params).map_err(|e| OidcError::Internal(e.to_string()))?;
    let sep = if d.authorization_endpoint.contains('?') {
        '&'
    } else {
        '?'
    };
    let exp = (app.now().unix_timestamp() + STATE_TTL_SECS).to_string();
    let cookie = seal(app, &[&state, &nonce, &verifier, &exp]);
    Ok(redirect(
        &format!("{}{sep}{query}", d.authorization_endpoint),
        &[session::set_cookie(
            app,
            STATE_COOKIE,
            &cookie,
            STATE_TTL_SECS,
        )],
    ))
}

async fn callback(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let clear = session::clear_cookie(&app, STATE_COOKIE);
    match finish_login(&app, &headers, &q).await {
        Ok(token) => {
            let secs = session::SESSION_TTL.whole_seconds();
            redirect(
                AFTER_LOGIN,
                &[
                    clear,
                    session::set_cookie(&app, session::COOKIE, &token, secs),
                ],
            )
        }
        Err(e) => {
            let mut r = error_page(e);
            if let Ok(v) = HeaderValue::from_str(&clear) {
                r.headers_mut().append(header::SET_COOKIE, v);
            }
            r
        }
    }
}

async fn finish_login(
    app: &Arc<App>,
    headers: &HeaderMap,
    q: &HashMap<String, String>,
) -> Result<String, OidcError> {
    let oidc = configured(app).map_err(|e| OidcError::Refused(e.detail))?;
    if let Some(err) = q.get("error") {
        let desc = q
            .get("error_description")
            .map(String::as_str)
            .unwrap_or_default();
        return Err(OidcError::Refused(format!(
            "the identity provider refused the login: {} {}",
            clip(err),
            clip(desc)
        )));
    }
    let now = app.now().unix_timestamp();
    let (state, nonce, verifier) = unseal(app, state_cookie(headers).unwrap_or_default(), now)?;
    let given = q.get("state").map(String::as_str).unwrap_or_default();
    if !airlock_core::notify::signatures_equal(&state, given) {
        return Err(OidcError::Refused(
            "the `state` of this callback does not match this browser's login (forged or stale link)".into(),
        ));
    }
    // RFC 9207: when the provider names itself, it must be ours (mix-up defence).
    if let Some(iss) = q.get("iss") {
        if iss != &oidc.idp.issuer {
            return Err(OidcError::Refused(format!(
                "the callback names issuer `{}`, not ours",
                clip(iss)
            )));
        }
    }
    let code = q
        .get("code")
        .filter(|c| !c.is_empty() && c.len() <= 2048)
        .ok_or_else(|| OidcError::Refused("the callback carries no authorization code".into()))?;
    let redirect_uri = redirect_uri(app, headers)?;
    let tokens = match oidc
        .idp
        .token(&[
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", &redirect_uri),
            ("code_verifier", &verifier),
        ])
        .await?
    {
        TokenOutcome::Tokens(t) => t,
        TokenOutcome::Refused(e, d) => {
            return Err(OidcError::Refused(format!(
                "the token endpoint refused the code: {e} {d}"
            )))
        }
    };
    let id_token = tokens.id_token.ok_or_else(|| {
        OidcError::Refused(
            "the token endpoint returned no id_token (is `openid` in scopes?)".into(),
        )
    })?;
    let claims = oidc.idp.verify(&id_token, Some(&nonce), now).await?;
    let (who, groups) = crate::identity::oidc_login(app, &oidc.config, &claims)
        .await
        .map_err(|e| match e.status {
            StatusCode::FORBIDDEN => OidcError::Forbidden(e.detail),
            _ => OidcError::Internal(e.detail),
        })?;
    let origin = session::Origin {
        groups,
        admin: false,
        mfa: who.mfa,
        parent: None,
    };
    session::start(app, &who.name, origin, "oidc", session::SESSION_TTL)
        .await
        .map_err(|e| OidcError::Internal(e.detail))
}

async fn logout(State(app): State<Arc<App>>, headers: HeaderMap, body: Bytes) -> Response {
    let clear = session::clear_cookie(&app, session::COOKIE);
    let done = |status, title: &str, text: &str| {
        let mut r = page(status, title, text);
        if let Ok(v) = HeaderValue::from_str(&clear) {
            r.headers_mut().append(header::SET_COOKIE, v);
        }
        r
    };
    let Some(token) = session::cookie(&headers, session::COOKIE) else {
        return done(StatusCode::OK, "Signed out", "You are signed out.");
    };
    // A session that is already expired or revoked has nothing left to end.
    let Ok(Caller(who)) = Caller::from_token(&app, token).await else {
        return done(StatusCode::OK, "Signed out", "You are signed out.");
    };
    let form: HashMap<String, String> = serde_urlencoded::from_bytes(&body).unwrap_or_default();
    let given = form
        .get(session::CSRF_FIELD)
        .map(String::as_str)
        .or_else(|| {
            headers
                .get(session::CSRF_HEADER)
                .and_then(|v| v.to_str().ok())
        })
        .unwrap_or_default();
    if !session::csrf_ok(&app, token, given) {
        return page(
            StatusCode::FORBIDDEN,
            "Not signed out",
            "The sign-out form lacked a valid `csrf` field: reload the page and try again.",
        );
    }
    match session::end(&app, &who, token).await {
        Ok(()) => done(
            StatusCode::OK,
            "Signed out",
            "You are signed out; the session was revoked.",
        ),
        Err(e) => page(e.status, "Not signed out", &e.detail),
    }
}
