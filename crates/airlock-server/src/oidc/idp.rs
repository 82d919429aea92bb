//! The identity provider as seen from airlock: discovery document and JWKS
//! (cached; fetched again when the provider was down, or when a token names
//! an unknown `kid`, at most every few seconds), and the token endpoint.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{Map, Value};
use tokio::sync::Mutex;

use super::verify::{self, Expect, Jwks, VerifyError};
use super::OidcError;

/// Largest discovery, JWKS or token response read (bytes).
const MAX_RESPONSE: usize = 256 * 1024;
/// Discovery is fetched again after this long (keys rotate, endpoints rarely move).
const DISCOVERY_TTL: Duration = Duration::from_secs(3600);
/// A JWKS refetch for an unknown `kid` happens at most this often.
const JWKS_REFETCH_MIN: Duration = Duration::from_secs(10);

/// Whether cached keys of this `age` may be used: within `ttl`, and when a
/// token names an unknown `kid` (`refresh`), only if fetched very recently.
pub fn jwks_fresh(age: Duration, refresh: bool, ttl: Duration) -> bool {
    if refresh {
        age < JWKS_REFETCH_MIN
    } else {
        age < ttl
    }
}

/// The parts of `/.well-known/openid-configuration` airlock uses.
#[derive(Deserialize, Debug, Clone)]
pub struct Discovery {
    pub issuer: String,
    pub authorization_endpoint: String,
    pub token_endpoint: String,
    pub jwks_uri: String,
    #[serde(default)]
    pub device_authorization_endpoint: Option<String>,
}

/// A successful token endpoint answer (only what we use).
#[derive(Deserialize, Debug)]
pub struct TokenResponse {
    #[serde(default)]
    pub id_token: Option<String>,
}

/// Outcome of a token endpoint call.
pub enum TokenOutcome {
    Tokens(TokenResponse),
    /// An OAuth error (`error`, `error_description`).
    Refused(String, String),
}

struct Cache {
    discovery: Option<(Arc<Discovery>, Instant)>,
    jwks: Option<(Arc<Jwks>, Instant)>,
}

/// HTTP client for one provider.
pub struct Idp {
    pub issuer: String,
    pub client_id: String,
    client_secret: Option<String>,
    http: reqwest::Client,
    cache: Mutex<Cache>,
    /// Keys are fetched again after this long (`[auth.oidc] jwks_ttl`).
    jwks_ttl: Duration,
}

impl Idp {
    /// A client for `issuer` (nothing is fetched yet: the provider may be down at start-up).
    pub fn new(
        issuer: &str,
        client_id: &str,
        client_secret: Option<String>,
        jwks_ttl: Duration,
    ) -> Result<Idp, airlock_service::SetupError> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| format!("[auth.oidc]: HTTP client: {e}"))?;
        Ok(Idp {
            issuer: issuer.trim_end_matches('/').to_string(),
            client_id: client_id.to_string(),
            client_secret,
            jwks_ttl,
            http,
            cache: Mutex::new(Cache {
                discovery: None,
                jwks: None,
            }),
        })
    }

    async fn get_json<T: DeserializeOwned>(&self, url: &str) -> Result<T, OidcError> {
        let resp = self.http.get(url).send().await.map_err(|e| {
            OidcError::Unavailable(format!("cannot reach the identity provider at {url}: {e}"))
        })?;
        if !resp.status().is_success() {
            return Err(OidcError::Unavailable(format!(
                "the identity provider answered {} for {url}",
                resp.status()
            )));
        }
        let body = read_bounded(resp).await?;
        serde_json::from_slice(&body).map_err(|e| {
            OidcError::Unavailable(format!("the identity provider sent bad JSON at {url}: {e}"))
        })
    }

    /// The discovery document (cached; fetched again if the last try failed).
    pub async fn discovery(&self) -> Result<Arc<Discovery>, OidcError> {
        let mut cache = self.cache.lock().await;
        if let Some((d, at)) = &cache.discovery {
            if at.elapsed() < DISCOVERY_TTL {
                return Ok(d.clone());
            }
        }
        let url = format!("{}/.well-known/openid-configuration", self.issuer);
        let fetched: Result<Discovery, _> = self.get_json(&url).await;
        match fetched {
            Ok(d) => {
                // OpenID Connect Discovery 1.0 §4.3: the document must name the issuer we asked.
                if d.issuer != self.issuer {
                    return Err(OidcError::Unavailable(format!(
                        "the discovery document names issuer `{}`, but [auth.oidc] issuer is `{}`: fix the configuration",
                        d.issuer, self.issuer
                    )));
                }
                let d = Arc::new(d);
                cache.discovery = Some((d.clone(), Instant::now()));
                Ok(d)
            }
            // Keep serving the last good copy while the provider is down.
            Err(e) => match &cache.discovery {
                Some((d, _)) => {
                    tracing::warn!(error = %e, "OIDC discovery refresh failed; using the cached copy");
                    Ok(d.clone())
                }
                None => Err(e),
            },
        }
    }

    async fn jwks(&self, refresh: bool) -> Result<Arc<Jwks>, OidcError> {
        let d = self.discovery().await?;
        let mut cache = self.cache.lock().await;
        if let Some((k, at)) = &cache.jwks {
            if jwks_fresh(at.elapsed(), refresh, self.jwks_ttl) {
                return Ok(k.clone());
            }
        }
        match self.get_json::<Jwks>(&d.jwks_uri).await {
            Ok(keys) => {
                let keys = Arc::new(keys);
                cache.jwks = Some((keys.clone(), Instant::now()));
                Ok(keys)
            }
            // A timed refresh that fails keeps the last good keys (the
            // provider is down, logins keep working); an unknown kid does not.
            Err(e) => match &cache.jwks {
                Some((k, _)) if !refresh => {
                    tracing::warn!(error = %e, "OIDC key refresh failed; using the cached keys");
                    Ok(k.clone())
                }
                _ => Err(e),
            },
        }
    }

    /// Verifies an ID token; an unknown `kid` refetches the JWKS once (rate-limited).
    pub async fn verify(
        &self,
        id_token: &str,
        nonce: Option<&str>,
        now: i64,
    ) -> Result<Map<String, Value>, OidcError> {
        let expect = Expect {
            issuer: &self.issuer,
            client_id: &self.client_id,
            nonce,
            now,
        };
        let keys = self.jwks(false).await?;
        match verify::verify(id_token, &keys, &expect) {
            Err(VerifyError::UnknownKey(_)) => {
                let keys = self.jwks(true).await?;
                verify::verify(id_token, &keys, &expect).map_err(OidcError::Token)
            }
            other => other.map_err(OidcError::Token),
        }
    }

    /// POSTs `form` to `url` with our client credentials (HTTP Basic when
    /// there is a secret, `client_id` in the form otherwise).
    pub async fn post_form(&self, url: &str, form: &[(&str, &str)]) -> Result<Value, OidcError> {
        let mut fields: Vec<(&str, &str)> = form.to_vec();
        let mut req = self.http.post(url);
        match &self.client_secret {
            // RFC 6749 §2.3.1: both parts are form-urlencoded before Basic encoding.
            Some(secret) => {
                req = req.basic_auth(urlencode(&self.client_id), Some(urlencode(secret)));
            }
            None => fields.push(("client_id", &self.client_id)),
        }
        let body =
            serde_urlencoded::to_string(&fields).map_err(|e| OidcError::Internal(e.to_string()))?;
        let resp = req
            .header("content-type", "application/x-www-form-urlencoded")
            .header("accept", "application/json")
            .body(body)
            .send()
            .await
            .map_err(|e| {
                OidcError::Unavailable(format!("cannot reach the identity provider at {url}: {e}"))
            })?;
        let status = resp.status();
        let bytes = read_bounded(resp).await?;
        let v: Value = serde_json::from_slice(&bytes).map_err(|_| {
            OidcError::Unavailable(format!(
                "the identity provider answered {status} without JSON at {url}"
            ))
        })?;
        if status.is_server_error() {
            return Err(OidcError::Unavailable(format!(
                "the identity provider answered {status} at {url}"
            )));
        }
        Ok(v)
    }

    /// Calls the token endpoint.
    pub async fn token(&self, form: &[(&str, &str)]) -> Result<TokenOutcome, OidcError> {
        let d = self.discovery().await?;
        let v = self.post_form(&d.token_endpoint, form).await?;
        if let Some(err) = v.get("error").and_then(Value::as_str) {
            let desc = v
                .get("error_description")
                .and_then(Value::as_str)
                .unwrap_or_default();
            return Ok(TokenOutcome::Refused(clip(err), clip(desc)));
        }
        serde_json::from_value(v)
            .map(TokenOutcome::Tokens)
            .map_err(|e| OidcError::Unavailable(format!("bad token response: {e}")))
    }
}

/// Shortens provider-supplied text before it reaches logs or pages.
pub fn clip(s: &str) -> String {
    s.chars().take(200).collect()
}

fn urlencode(s: &str) -> String {
    serde_urlencoded::to_string([("", s)])
        .map(|t| t[1..].to_string())
        .unwrap_or_default()
}

async fn read_bounded(mut resp: reqwest::Response) -> Result<Vec<u8>, OidcError> {
    let mut out = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| {
        OidcError::Unavailable(format!("reading the identity provider's answer: {e}"))
    })? {
        out.extend_from_slice(&chunk);
        if out.len() > MAX_RESPONSE {
            return Err(OidcError::Unavailable(
                "the identity provider's answer is larger than 256 KiB".into(),
            ));
        }
    }
    Ok(out)
}
