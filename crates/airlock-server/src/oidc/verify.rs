//! ID token verification: a compact JWS checked with `ring` against the
//! provider's JWKS (RS256, ES256), then `iss`, `aud`/`azp`, `exp`/`iat`/`nbf`
//! and `nonce`. Pure: keys and the current time come in as arguments.

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use ring::signature::{self, RsaPublicKeyComponents, UnparsedPublicKey};
use serde::Deserialize;
use serde_json::{Map, Value};

/// Longest ID token accepted (bytes).
pub const MAX_TOKEN_LEN: usize = 16 * 1024;
/// Clock skew tolerated on `exp`, `iat` and `nbf` (seconds).
pub const LEEWAY_SECS: i64 = 60;

/// One key of a JSON Web Key Set (only the members we use).
#[derive(Deserialize, Debug, Clone, Default)]
pub struct Jwk {
    pub kty: String,
    #[serde(default)]
    pub kid: Option<String>,
    #[serde(default, rename = "use")]
    pub use_: Option<String>,
    #[serde(default)]
    pub alg: Option<String>,
    #[serde(default)]
    pub n: Option<String>,
    #[serde(default)]
    pub e: Option<String>,
    #[serde(default)]
    pub crv: Option<String>,
    #[serde(default)]
    pub x: Option<String>,
    #[serde(default)]
    pub y: Option<String>,
}

/// A JSON Web Key Set.
#[derive(Deserialize, Debug, Clone, Default)]
pub struct Jwks {
    pub keys: Vec<Jwk>,
}

/// What the token must match.
pub struct Expect<'a> {
    /// The configured issuer, compared exactly.
    pub issuer: &'a str,
    /// Our client id: must be in `aud` (and be `azp` when `aud` has several entries).
    pub client_id: &'a str,
    /// The nonce sent in the authorization request (`None`: device flow, none sent).
    pub nonce: Option<&'a str>,
    /// Now, in Unix seconds.
    pub now: i64,
}

/// Why an ID token was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum VerifyError {
    #[error("the ID token is not a well-formed JWS ({0})")]
    Malformed(&'static str),
    #[error("the ID token uses algorithm `{0}`; only RS256 and ES256 are accepted")]
    UnsupportedAlg(String),
    #[error("no key in the provider's JWKS matches the ID token (kid {0:?})")]
    UnknownKey(Option<String>),
    #[error("the ID token's signature is invalid")]
    BadSignature,
    #[error("the ID token's `{claim}` is wrong: {why}")]
    Claim { claim: &'static str, why: String },
}

fn claim(claim: &'static str, why: impl Into<String>) -> VerifyError {
    VerifyError::Claim {
        claim,
        why: why.into(),
    }
}

#[derive(Deserialize)]
struct Header {
    alg: String,
    #[serde(default)]
    kid: Option<String>,
}

/// Verifies `token` and returns its claims.
pub fn verify(
    token: &str,
    jwks: &Jwks,
    expect: &Expect,
) -> Result<Map<String, Value>, VerifyError> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(VerifyError::Malformed("longer than 16 KiB"));
    }
    let mut parts = token.split('.');
    let (Some(h), Some(p), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(VerifyError::Malformed("expected three dot-separated parts"));
    };
    let header: Header = B64
        .decode(h)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or(VerifyError::Malformed("header is not base64url JSON"))?;
    let sig = B64
        .decode(s)
        .map_err(|_| VerifyError::Malformed("signature is not base64url"))?;
    let kty = match header.alg.as_str() {
        "RS256" => "RSA",
        "ES256" => "EC",
        // `none`, HS* (a public client id would be the key), PS*, ...: refused.
        other => {
            return Err(VerifyError::UnsupportedAlg(
                other.chars().take(20).collect(),
            ))
        }
    };
    let key = pick_key(jwks, kty, &header)?;
    let signed = &token.as_bytes()[..h.len() + 1 + p.len()];
    check_signature(key, &header.alg, signed, &sig)?;
    let claims: Map<String, Value> = B64
        .decode(p)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or(VerifyError::Malformed("payload is not base64url JSON"))?;
    check_claims(&claims, expect)?;
    Ok(claims)
}

fn pick_key<'a>(jwks: &'a Jwks, kty: &str, header: &Header) -> Result<&'a Jwk, VerifyError> {
    let usable = |k: &&Jwk| {
        k.kty == kty
            && k.use_.as_deref().is_none_or(|u| u == "sig")
            && k.alg.as_deref().is_none_or(|a| a == header.alg)
    };
    let found = match &header.kid {
        Some(kid) => jwks
            .keys
            .iter()
            .filter(usable)
            .find(|k| k.kid.as_deref() == Some(kid)),
        // Without a kid the choice must be unambiguous.
        None => {
            let mut it = jwks.keys.iter().filter(usable);
            match (it.next(), it.next()) {
                (Some(k), None) => Some(k),
                _ => None,
            }
        }
    };
    found.ok_or_else(|| VerifyError::UnknownKey(header.kid.clone()))
}

fn b64_member(v: &Option<String>) -> Result<Vec<u8>, VerifyError> {
    v.as_deref()
        .and_then(|s| B64.decode(s).ok())
        .ok_or(VerifyError::Malformed("JWKS key lacks a base64url member"))
}

fn check_signature(key: &Jwk, alg: &str, signed: &[u8], sig: &[u8]) -> Result<(), VerifyError> {
    let ok = match alg {
        "RS256" => {
            let n = b64_member(&key.n)?;
            let e = b64_member(&key.e)?;
            RsaPublicKeyComponents { n: &n, e: &e }
                .verify(&signature::RSA_PKCS1_2048_8192_SHA256, signed, sig)
                .is_ok()
        }
        "ES256" => {
            if key.crv.as_deref() != Some("P-256") {
                return Err(VerifyError::UnknownKey(key.kid.clone()));
            }
            let (x, y) = (b64_member(&key.x)?, b64_member(&key.y)?);
            if x.len() != 32 || y.len() != 32 {
                return Err(VerifyError::Malformed(
                    "P-256 key coordinates are not 32 bytes",
                ));
            }
            let mut point = Vec::with_capacity(65);
            point.push(4);
            point.extend_from_slice(&x);
            point.extend_from_slice(&y);
            UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, &point)
                .verify(signed, sig)
                .is_ok()
        }
        _ => false,
    };
    if ok {
        Ok(())
    } else {
        Err(VerifyError::BadSignature)
    }
}

fn num(claims: &Map<String, Value>, name: &'static str) -> Result<Option<i64>, VerifyError> {
    match claims.get(name) {
        None => Ok(None),
        Some(v) => v
            .as_i64()
            .or_else(|| v.as_f64().map(|f| f as i64))
            .map(Some)
            .ok_or_else(|| claim(name, "not a number")),
    }
}

fn check_claims(c: &Map<String, Value>, x: &Expect) -> Result<(), VerifyError> {
    match c.get("iss").and_then(Value::as_str) {
        Some(iss) if iss == x.issuer => {}
        Some(iss) => return Err(claim("iss", format!("`{iss}`, expected `{}`", x.issuer))),
        None => return Err(claim("iss", "missing")),
    }
    let aud: Vec<&str> = match c.get("aud") {
        Some(Value::String(s)) => vec![s.as_str()],
        Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).collect(),
        _ => return Err(claim("aud", "missing")),
    };
    if !aud.contains(&x.client_id) {
        return Err(claim(
            "aud",
            format!("does not contain our client id `{}`", x.client_id),
        ));
    }
    let azp = c.get("azp").and_then(Value::as_str);
    if (aud.len() > 1 || azp.is_some()) && azp != Some(x.client_id) {
        return Err(claim(
            "azp",
            format!("must be our client id `{}`", x.client_id),
        ));
    }
    // Saturating: the claims are the provider's numbers, and `i64::MAX` must
    // neither wrap (and be read as long expired) nor panic with overflow checks.
    let exp = num(c, "exp")?.ok_or_else(|| claim("exp", "missing"))?;
    if x.now >= exp.saturating_add(LEEWAY_SECS) {
        return Err(claim("exp", "the token has expired"));
    }
    let iat = num(c, "iat")?.ok_or_else(|| claim("iat", "missing"))?;
    if iat > x.now.saturating_add(LEEWAY_SECS) {
        return Err(claim("iat", "issued in the future (check the clocks)"));
    }
    if let Some(nbf) = num(c, "nbf")? {
        if nbf > x.now.saturating_add(LEEWAY_SECS) {
            return Err(claim("nbf", "not valid yet"));
        }
    }
    if let Some(want) = x.nonce {
        let got = c.get("nonce").and_then(Value::as_str);
        if !got.is_some_and(|g| airlock_core::notify::signatures_equal(g, want)) {
            return Err(claim(
                "nonce",
                "does not match this login (replayed or mixed-up token)",
            ));
        }
    }
    Ok(())
}
