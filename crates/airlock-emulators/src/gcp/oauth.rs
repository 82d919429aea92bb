//! Google's OAuth 2.0 token endpoint for service accounts (the JWT-bearer
//! grant) and the GCE metadata server's token path, as the emulation serves
//! them: RS256 assertions verified against the registered key, `aud`, `iat`
//! and `exp` checked, opaque bearer tokens issued with an expiry.

use std::sync::OnceLock;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use rsa::pkcs1v15::{Signature, VerifyingKey};
use rsa::pkcs8::{EncodePrivateKey, LineEnding};
use rsa::signature::Verifier;
use rsa::{RsaPrivateKey, RsaPublicKey};
use serde::Deserialize;
use sha2::Sha256;
use time::OffsetDateTime;

/// The grant type of the service-account flow (RFC 7523).
pub const JWT_BEARER: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";

/// Google refuses assertions that live longer than this.
const MAX_ASSERTION_SECS: i64 = 3600;
/// Clock skew tolerated on `iat`.
const SKEW_SECS: i64 = 300;

/// One RSA key per process: generating 2048-bit keys is slow in debug builds,
/// and service accounts still differ by key id and email.
fn shared_key() -> &'static RsaPrivateKey {
    static KEY: OnceLock<RsaPrivateKey> = OnceLock::new();
    KEY.get_or_init(|| {
        RsaPrivateKey::new(&mut rand::thread_rng(), 2048).expect("RSA key generation")
    })
}

/// A registered service-account key: who it belongs to and how to verify it.
pub(crate) struct RegisteredKey {
    pub email: String,
    pub public: RsaPublicKey,
}

/// Creates a key for `email`: the registration to keep and the key file JSON
/// (same fields as `gcloud iam service-accounts keys create`).
pub(crate) fn new_key(
    email: &str,
    kid: &str,
    token_uri: &str,
) -> (RegisteredKey, serde_json::Value) {
    let private = shared_key();
    let pem = private
        .to_pkcs8_pem(LineEnding::LF)
        .expect("PKCS#8 encoding of a fresh key");
    let project = email
        .split_once('@')
        .and_then(|(_, d)| d.split('.').next())
        .unwrap_or("emulated-project");
    let json = serde_json::json!({
        "type": "service_account",
        "project_id": project,
        "private_key_id": kid,
        "private_key": pem.as_str(),
        "client_email": email,
        "client_id": "100000000000000000001",
        "auth_uri": "https://accounts.google.com/o/oauth2/auth",
        "token_uri": token_uri,
        "auth_provider_x509_cert_url": "https://www.googleapis.com/oauth2/v1/certs",
        "universe_domain": "googleapis.com",
    });
    (
        RegisteredKey {
            email: email.into(),
            public: RsaPublicKey::from(private),
        },
        json,
    )
}

/// An OAuth error as the token endpoint returns it (HTTP 400 with this body).
#[derive(Debug)]
pub(crate) struct OAuthError {
    pub error: &'static str,
    pub description: String,
}

fn invalid_grant(description: impl Into<String>) -> OAuthError {
    OAuthError {
        error: "invalid_grant",
        description: description.into(),
    }
}

#[derive(Deserialize)]
struct Header {
    alg: String,
    kid: Option<String>,
}

#[derive(Deserialize)]
struct Claims {
    iss: String,
    scope: Option<String>,
    aud: String,
    iat: i64,
    exp: i64,
}

/// Verifies a JWT-bearer assertion; returns the service account's email.
/// `find_keys(kid, iss)` yields the candidate keys (by key id when the header
/// names one, else every key of the issuer).
pub(crate) fn verify_assertion<'k>(
    assertion: &str,
    audience: &str,
    now: OffsetDateTime,
    find_keys: impl Fn(Option<&str>, &str) -> Vec<&'k RegisteredKey>,
) -> Result<String, OAuthError> {
    let mut parts = assertion.split('.');
    let (Some(h), Some(c), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(invalid_grant("Invalid JWT: not three dot-separated parts."));
    };
    let decode = |part: &str| URL_SAFE_NO_PAD.decode(part).ok();
    let header: Header = decode(h)
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or_else(|| invalid_grant("Invalid JWT header."))?;
    let claims: Claims = decode(c)
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or_else(|| invalid_grant("Invalid JWT claim set."))?;
    let signature = decode(s)
        .and_then(|b| Signature::try_from(b.as_slice()).ok())
        .ok_or_else(|| invalid_grant("Invalid JWT Signature."))?;
    if header.alg != "RS256" {
        return Err(invalid_grant(format!(
            "Invalid JWT: algorithm {} is not supported; use RS256.",
            header.alg
        )));
    }
    let keys = find_keys(header.kid.as_deref(), &claims.iss);
    let signed = &assertion[..h.len() + 1 + c.len()];
    let key = keys
        .iter()
        .find(|k| {
            k.email == claims.iss
                && VerifyingKey::<Sha256>::new(k.public.clone())
                    .verify(signed.as_bytes(), &signature)
                    .is_ok()
        })
        .ok_or_else(|| invalid_grant("Invalid JWT Signature."))?;
    if claims.aud != audience {
        return Err(invalid_grant(format!(
            "Invalid JWT: Failed audience check. The right audience is {audience}"
        )));
    }
    let now = now.unix_timestamp();
    if claims.exp <= now
        || claims.iat > now + SKEW_SECS
        || claims.exp - claims.iat > MAX_ASSERTION_SECS
        || claims.exp <= claims.iat
    {
        return Err(invalid_grant(
            "Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable \
             timeframe. Check your iat and exp values in the JWT claim.",
        ));
    }
    if claims.scope.as_deref().is_none_or(|s| s.trim().is_empty()) {
        return Err(OAuthError {
            error: "invalid_scope",
            description: "Invalid OAuth scope or ID token audience provided.".into(),
        });
    }
    Ok(key.email.clone())
}

/// A fresh opaque access token (looks like Google's, carries nothing).
pub(crate) fn new_access_token() -> String {
    use rand::RngCore;
    let mut b = [0u8; 24];
    rand::thread_rng().fill_bytes(&mut b);
    format!("ya29.emu-{}", URL_SAFE_NO_PAD.encode(b))
}
