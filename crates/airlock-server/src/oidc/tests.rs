//! ID token verification failures, with keys generated here.

use std::sync::OnceLock;

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use ring::rand::SystemRandom;
use ring::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
use serde_json::{json, Value};

use super::verify::{verify, Expect, Jwk, Jwks, VerifyError};

const ISS: &str = "https://idp.example";
const NOW: i64 = 1_800_000_000;

struct Ec {
    pair: EcdsaKeyPair,
    jwk: Jwk,
}

fn ec(kid: &str) -> Ec {
    let rng = SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
    let pair =
        EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng).unwrap();
    let pt = pair.public_key().as_ref();
    let jwk = Jwk {
        kty: "EC".into(),
        kid: Some(kid.into()),
        crv: Some("P-256".into()),
        x: Some(B64.encode(&pt[1..33])),
        y: Some(B64.encode(&pt[33..65])),
        ..Jwk::default()
    };
    Ec { pair, jwk }
}

fn rsa_key() -> &'static (rsa::RsaPrivateKey, Jwk) {
    static K: OnceLock<(rsa::RsaPrivateKey, Jwk)> = OnceLock::new();
    K.get_or_init(|| {
        use rsa::traits::PublicKeyParts;
        let key = rsa::RsaPrivateKey::new(&mut rand::rngs::OsRng, 2048).unwrap();
        let jwk = Jwk {
            kty: "RSA".into(),
            kid: Some("rsa-1".into()),
            n: Some(B64.encode(key.n().to_bytes_be())),
            e: Some(B64.encode(key.e().to_bytes_be())),
            ..Jwk::default()
        };
        (key, jwk)
    })
}

fn claims() -> Value {
    json!({"iss": ISS, "aud": "airlock", "sub": "alice", "exp": NOW + 300, "iat": NOW - 5, "nonce": "n-123"})
}

fn encode(header: Value, payload: &Value) -> String {
    format!(
        "{}.{}",
        B64.encode(header.to_string()),
        B64.encode(payload.to_string())
    )
}

fn es256(k: &Ec, payload: &Value) -> String {
    let signing = encode(json!({"alg": "ES256", "kid": k.jwk.kid}), payload);
    let sig = k
        .pair
        .sign(&SystemRandom::new(), signing.as_bytes())
        .unwrap();
    format!("{signing}.{}", B64.encode(sig.as_ref()))
}

fn rs256(payload: &Value) -> String {
    use rsa::signature::{SignatureEncoding, Signer};
    let (key, jwk) = rsa_key();
    let signing = encode(json!({"alg": "RS256", "kid": jwk.kid}), payload);
    let signer = rsa::pkcs1v15::SigningKey::<sha2::Sha256>::new(key.clone());
    format!(
        "{signing}.{}",
        B64.encode(signer.sign(signing.as_bytes()).to_bytes())
    )
}

fn expect() -> Expect<'static> {
    Expect {
        issuer: ISS,
        client_id: "airlock",
        nonce: Some("n-123"),
        now: NOW,
    }
}

fn jwks(keys: Vec<Jwk>) -> Jwks {
    Jwks { keys }
}

fn claim_err(r: Result<serde_json::Map<String, Value>, VerifyError>) -> &'static str {
    match r {
        Err(VerifyError::Claim { claim, .. }) => claim,
        other => panic!("expected a claim error, got {other:?}"),
    }
}

#[test]
fn valid_es256_and_rs256_tokens_are_accepted() {
    let k = ec("ec-1");
    let set = jwks(vec![k.jwk.clone(), rsa_key().1.clone()]);
    let c = verify(&es256(&k, &claims()), &set, &expect()).unwrap();
    assert_eq!(c["sub"], "alice");
    let c = verify(&rs256(&claims()), &set, &expect()).unwrap();
    assert_eq!(c["sub"], "alice");
}

#[test]
fn token_signed_by_another_key_with_the_same_kid_is_refused() {
    let good = ec("k");
    let evil = ec("k");
    let r = verify(&es256(&evil, &claims()), &jwks(vec![good.jwk]), &expect());
    assert_eq!(r.unwrap_err(), VerifyError::BadSignature);
}

#[test]
fn altered_payload_breaks_the_signature() {
    let k = ec("k");
    let token = es256(&k, &claims());
    let mut parts: Vec<String> = token.split('.').map(str::to_string).collect();
    let mut forged = claims();
    forged["sub"] = json!("mallory");
    parts[1] = B64.encode(forged.to_string());
    let r = verify(&parts.join("."), &jwks(vec![k.jwk]), &expect());
    assert_eq!(r.unwrap_err(), VerifyError::BadSignature);
}

#[test]
fn unknown_kid_is_reported_so_the_jwks_can_be_refetched() {
    let k = ec("new-key");
    let other = ec("old-key");
    let r = verify(&es256(&k, &claims()), &jwks(vec![other.jwk]), &expect());
    assert_eq!(
        r.unwrap_err(),
        VerifyError::UnknownKey(Some("new-key".into()))
    );
}

#[test]
fn alg_none_and_hmac_are_refused() {
    let k = ec("k");
    for alg in ["none", "HS256", "HS512"] {
        let t = format!("{}.", encode(json!({"alg": alg, "kid": "k"}), &claims()));
        let r = verify(&t, &jwks(vec![k.jwk.clone()]), &expect());
        assert_eq!(r.unwrap_err(), VerifyError::UnsupportedAlg(alg.into()));
    }
}

#[test]
fn wrong_issuer_is_refused() {
    let k = ec("k");
    let mut c = claims();
    c["iss"] = json!("https://idp.example/other");
    assert_eq!(
        claim_err(verify(&es256(&k, &c), &jwks(vec![k.jwk]), &expect())),
        "iss"
    );
}

#[test]
fn wrong_audience_is_refused_and_several_audiences_need_azp() {
    let k = ec("k");
    let set = jwks(vec![k.jwk.clone()]);
    let mut c = claims();
    c["aud"] = json!("someone-else");
    assert_eq!(claim_err(verify(&es256(&k, &c), &set, &expect())), "aud");
    c["aud"] = json!(["someone-else", "airlock"]);
    assert_eq!(claim_err(verify(&es256(&k, &c), &set, &expect())), "azp");
    c["azp"] = json!("airlock");
    verify(&es256(&k, &c), &set, &expect()).unwrap();
}

#[test]
fn expired_token_is_refused_beyond_the_leeway() {
    let k = ec("k");
    let set = jwks(vec![k.jwk.clone()]);
    let mut c = claims();
    c["exp"] = json!(NOW - 30);
    verify(&es256(&k, &c), &set, &expect()).expect("within 60 s leeway");
    c["exp"] = json!(NOW - 61);
    assert_eq!(claim_err(verify(&es256(&k, &c), &set, &expect())), "exp");
}

#[test]
fn far_future_or_huge_exp_is_accepted_without_overflow() {
    // Found by the id_token fuzz target: `exp + leeway` overflowed (a panic with
    // overflow checks, a wrap to "expired" without them).
    let k = ec("k");
    let set = jwks(vec![k.jwk.clone()]);
    for exp in [json!(i64::MAX), json!(1.8e19), json!(u64::MAX)] {
        let mut c = claims();
        c["exp"] = exp.clone();
        verify(&es256(&k, &c), &set, &expect()).unwrap_or_else(|e| panic!("{exp}: {e}"));
    }
    let mut c = claims();
    c["iat"] = json!(i64::MIN);
    c["nbf"] = json!(-1.0e30);
    verify(&es256(&k, &c), &set, &expect()).expect("issued long ago");
}

#[test]
fn token_from_the_future_is_refused() {
    let k = ec("k");
    let set = jwks(vec![k.jwk.clone()]);
    let mut c = claims();
    c["iat"] = json!(NOW + 600);
    assert_eq!(claim_err(verify(&es256(&k, &c), &set, &expect())), "iat");
    let mut c = claims();
    c["nbf"] = json!(NOW + 600);
    assert_eq!(claim_err(verify(&es256(&k, &c), &set, &expect())), "nbf");
}

#[test]
fn wrong_or_missing_nonce_is_refused() {
    let k = ec("k");
    let set = jwks(vec![k.jwk.clone()]);
    let mut c = claims();
    c["nonce"] = json!("n-999");
    assert_eq!(claim_err(verify(&es256(&k, &c), &set, &expect())), "nonce");
    c.as_object_mut().unwrap().remove("nonce");
    assert_eq!(claim_err(verify(&es256(&k, &c), &set, &expect())), "nonce");
}

#[test]
fn garbage_is_malformed_not_a_panic() {
    let set = jwks(vec![]);
    for t in ["", "a.b", "a.b.c.d", "!!.!!.!!", &"x".repeat(20_000)] {
        assert!(
            matches!(verify(t, &set, &expect()), Err(VerifyError::Malformed(_))),
            "{t:.20}"
        );
    }
}

#[test]
fn signing_keys_are_refetched_after_their_ttl_and_for_an_unknown_kid_at_most_every_few_seconds() {
    use super::idp::jwks_fresh;
    use std::time::Duration;
    let ttl = Duration::from_secs(3600);
    assert!(jwks_fresh(Duration::from_secs(3599), false, ttl));
    assert!(
        !jwks_fresh(Duration::from_secs(3600), false, ttl),
        "keys expire after the TTL"
    );
    assert!(
        jwks_fresh(Duration::from_secs(1), true, ttl),
        "an unknown kid cannot force a refetch storm"
    );
    assert!(!jwks_fresh(Duration::from_secs(11), true, ttl));
}
