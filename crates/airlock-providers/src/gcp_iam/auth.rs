//! Access tokens for Google APIs: from a service-account key (OAuth 2.0
//! JWT-bearer grant, RS256 signed in-process with `ring`) or from the GCE
//! metadata server. One token is cached and shared until shortly before it
//! expires. Never logs or returns key material or tokens in errors.

use std::path::Path;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use ring::rand::SystemRandom;
use ring::signature::{RsaKeyPair, RSA_PKCS1_SHA256};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::Mutex;

use crate::ProviderError;

/// The scope Resource Manager IAM calls need.
pub const SCOPE: &str = "https://www.googleapis.com/auth/cloud-platform";
/// Lifetime asked for in the assertion (Google's maximum).
const ASSERTION_SECS: u64 = 3600;
/// A token is replaced this long before it expires (at most half its lifetime).
const REFRESH_MARGIN: Duration = Duration::from_secs(300);

/// A service-account key file, parsed. The private key never leaves this struct.
pub struct ServiceAccountKey {
    email: String,
    key_id: String,
    token_uri: String,
    key: RsaKeyPair,
}

/// A `credentials` file that cannot be used; the message names the file and
/// what to do, never the file's content.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct KeyFileError(String);

/// Lets the checks below write `format!(...)?`.
impl From<String> for KeyFileError {
    fn from(message: String) -> Self {
        KeyFileError(message)
    }
}

/// The RSA signature of a token assertion failed (a broken key).
#[derive(Debug, thiserror::Error)]
#[error("RSA signing failed: check the `credentials` key file")]
pub struct SigningFailed;

impl ServiceAccountKey {
    /// Reads a key file (`gcloud iam service-accounts keys create` output).
    /// Errors name the file and the problem, never the file's content.
    pub fn load(path: &Path) -> Result<ServiceAccountKey, KeyFileError> {
        let shown = path.display();
        let text = std::fs::read(path).map_err(|e| {
            format!(
                "cannot read the `credentials` file {shown}: {e}; create a key with \
                 `gcloud iam service-accounts keys create`, or remove `credentials` to use \
                 the GCE metadata server"
            )
        })?;
        let json: Value = serde_json::from_slice(&text).map_err(|e| {
            // serde_json's message may quote the input; position and category do not.
            format!(
                "the `credentials` file {shown} is not JSON (line {}, column {}: {:?} error); \
                 it should be a service account key file",
                e.line(),
                e.column(),
                e.classify()
            )
        })?;
        let field = |name: &str| -> Result<String, KeyFileError> {
            json.get(name)
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .ok_or_else(|| {
                    KeyFileError::from(format!("the `credentials` file {shown} has no `{name}`; it should be a service account key file"))
                })
        };
        let kind = field("type")?;
        if kind != "service_account" {
            let kind = if kind.len() <= 40
                && kind.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
            {
                kind
            } else {
                "(unrecognised)".into()
            };
            return Err(KeyFileError(format!(
                "the `credentials` file {shown} has type `{kind}`; airlock needs a service account key (type `service_account`)"
            )));
        }
        let email = field("client_email")?;
        let key_id = field("private_key_id")?;
        let token_uri = field("token_uri")?;
        if !(token_uri.starts_with("https://") || token_uri.starts_with("http://")) {
            return Err(KeyFileError(format!(
                "the `credentials` file {shown} has a `token_uri` that is not an http(s) URL"
            )));
        }
        let der = pem_der(&field("private_key")?).ok_or_else(|| {
            format!("`private_key` in {shown} is not a PEM \"PRIVATE KEY\" block")
        })?;
        let key = RsaKeyPair::from_pkcs8(&der)
            .or_else(|_| RsaKeyPair::from_der(&der))
            .map_err(|e| format!("`private_key` in {shown} is not a usable RSA key ({e})"))?;
        Ok(ServiceAccountKey {
            email,
            key_id,
            token_uri,
            key,
        })
    }

    /// A signed JWT-bearer assertion issued at `iat` (seconds since the epoch).
    fn assertion(&self, iat: u64) -> Result<String, SigningFailed> {
        let header = json!({"alg": "RS256", "typ": "JWT", "kid": self.key_id});
        let claims = json!({
            "iss": self.email,
            "scope": SCOPE,
            "aud": self.token_uri,
            "iat": iat,
            "exp": iat + ASSERTION_SECS,
        });
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let mut sig = vec![0; self.key.public().modulus_len()];
        self.key
            .sign(
                &RSA_PKCS1_SHA256,
                &SystemRandom::new(),
                input.as_bytes(),
                &mut sig,
            )
            .map_err(|_| SigningFailed)?;
        Ok(format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig)))
    }
}

/// The body of a PEM block of a private key (`PRIVATE KEY` or `RSA PRIVATE KEY`).
fn pem_der(pem: &str) -> Option<Vec<u8>> {
    let body = pem
        .trim()
        .lines()
        .map(str::trim)
        .skip_while(|l| !l.starts_with("-----BEGIN "));
    let mut lines = body.skip(1);
    let b64: String = lines
        .by_ref()
        .take_while(|l| !l.starts_with("-----END "))
        .collect();
    STANDARD.decode(b64).ok().filter(|d| !d.is_empty())
}

/// Where tokens come from.
pub enum Source {
    /// A service-account key file.
    Key(Box<ServiceAccountKey>),
    /// The metadata server at this `host[:port]` (`GCE_METADATA_HOST`, default `metadata.google.internal`).
    Metadata(String),
}

struct Cached {
    token: String,
    refresh_at: Instant,
}

/// A shared, cached access token.
pub struct Tokens {
    provider: String,
    source: Source,
    http: reqwest::Client,
    cache: Mutex<Option<Cached>>,
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    #[serde(default)]
    expires_in: u64,
}

#[derive(Deserialize)]
struct OAuthError {
    error: Option<String>,
    error_description: Option<String>,
}

impl Tokens {
    /// Tokens from `source` for the provider named `provider`.
    pub fn new(provider: String, source: Source, http: reqwest::Client) -> Tokens {
        Tokens {
            provider,
            source,
            http,
            cache: Mutex::new(None),
        }
    }

    fn refused(&self, detail: String) -> ProviderError {
        ProviderError::Refused {
            provider: self.provider.clone(),
            detail,
        }
    }

    fn unreachable(&self, detail: String) -> ProviderError {
        ProviderError::Unreachable {
            provider: self.provider.clone(),
            detail,
        }
    }

    /// A valid token: the cached one, or a fresh one. Concurrent callers wait
    /// for a single fetch instead of each asking the token endpoint.
    pub async fn get(&self) -> Result<String, ProviderError> {
        let mut cache = self.cache.lock().await;
        if let Some(c) = cache.as_ref().filter(|c| Instant::now() < c.refresh_at) {
            return Ok(c.token.clone());
        }
        let fetched_at = Instant::now();
        let t = self.fetch().await?;
        let lifetime = Duration::from_secs(t.expires_in.max(1));
        let margin = REFRESH_MARGIN.min(lifetime / 2);
        *cache = Some(Cached {
            token: t.access_token.clone(),
            refresh_at: fetched_at + lifetime - margin,
        });
        Ok(t.access_token)
    }

    /// Drops `stale` from the cache (the API said it is no longer valid).
    pub async fn invalidate(&self, stale: &str) {
        let mut cache = self.cache.lock().await;
        if cache.as_ref().is_some_and(|c| c.token == stale) {
            *cache = None;
        }
    }

    async fn fetch(&self) -> Result<TokenResponse, ProviderError> {
        match &self.source {
            Source::Key(key) => self.fetch_with_key(key).await,
            Source::Metadata(host) => self.fetch_from_metadata(host).await,
        }
    }

    async fn fetch_with_key(
        &self,
        key: &ServiceAccountKey,
    ) -> Result<TokenResponse, ProviderError> {
        let iat = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let assertion = key
            .assertion(iat)
            .map_err(|e| self.refused(e.to_string()))?;
        let resp = self
            .http
            .post(&key.token_uri)
            .form(&[
                ("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer"),
                ("assertion", assertion.as_str()),
            ])
            .send()
            .await
            .map_err(|e| {
                self.unreachable(format!(
                    "token endpoint {} not reachable: {e}",
                    key.token_uri
                ))
            })?;
        let status = resp.status();
        if status.is_success() {
            return resp.json().await.map_err(|e| {
                self.unreachable(format!(
                    "token endpoint {} answered garbage: {e}",
                    key.token_uri
                ))
            });
        }
        let body: Option<OAuthError> = resp.json().await.ok();
        let (error, description) = body
            .map(|b| {
                (
                    b.error.unwrap_or_default(),
                    b.error_description.unwrap_or_default(),
                )
            })
            .unwrap_or_default();
        let detail = format!(
            "token endpoint {} refused service account {} key {} (HTTP {}: {} {})",
            key.token_uri,
            key.email,
            key.key_id,
            status.as_u16(),
            error,
            description
        );
        if status.is_server_error() || status.as_u16() == 429 {
            Err(self.unreachable(detail))
        } else {
            Err(self.refused(format!(
                "{detail}; check that the key still exists and is enabled, and that the clock is right"
            )))
        }
    }

    async fn fetch_from_metadata(&self, host: &str) -> Result<TokenResponse, ProviderError> {
        let url = format!(
            "http://{host}/computeMetadata/v1/instance/service-accounts/default/token?scopes={SCOPE}"
        );
        let resp = self
            .http
            .get(&url)
            .header("Metadata-Flavor", "Google")
            .send()
            .await
            .map_err(|e| {
                self.unreachable(format!(
                    "GCE metadata server {host} not reachable ({e}); outside GCP, set \
                     `credentials` to a service account key file"
                ))
            })?;
        let status = resp.status();
        if status.is_success() {
            return resp.json().await.map_err(|e| {
                self.unreachable(format!("GCE metadata server {host} answered garbage: {e}"))
            });
        }
        let detail = format!(
            "GCE metadata server {host} gave no token (HTTP {}); attach a service account to \
             the instance or set `credentials`",
            status.as_u16()
        );
        if status.is_server_error() {
            Err(self.unreachable(detail))
        } else {
            Err(self.refused(detail))
        }
    }
}
