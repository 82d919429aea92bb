//! ID-token verification (`oidc::verify::verify`) with a fixed JWKS (one
//! ES256, one RS256 key) and fixed expectations. The first byte picks a mode:
//! 0 a raw token; 1 claims JSON that the target signs (so `check_claims` sees
//! arbitrary claims behind a valid signature); 2 `header \n claims`, both
//! arbitrary, signed with the EC key; 3 an arbitrary JWKS against a valid token.
#![no_main]

use std::sync::OnceLock;

use airlock_server::oidc::verify::{verify, Expect, Jwk, Jwks};
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use libfuzzer_sys::fuzz_target;
use ring::rand::SystemRandom;
use ring::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};

/// A P-256 key generated once for this target (PKCS#8, test material only).
const EC_PKCS8: &str = "308187020100301306072a8648ce3d020106082a8648ce3d030107046d306b020101042061b6dd319784536fea4d2cf7337acde2087cf6d403ae8396a91e532d20795f1fa14403420004b7a7be9fc31a807d69a5fcac5210e737e7e7f36e6ad704a54979463d674b75d13f44d368a0b1dc41851204398b951195481900a706c7068386a48b9f00e6933d";
/// The modulus of a 2048-bit RSA key generated once for this target (hex).
const RSA_N: &str = "CF760F1C294106A1B160DFAD6AB23C33B6BEE76DA91F7B9B97EDE33F1FA33D74F920EFBE5106227860D2956C5B1C2434C6A8D6DB8DCF6784507DF4E5B2A629A2D94C246626EF1BB4368DCDBCF43DF7B489467189C503FDD4AC2321CE5411D4DEC4E2D05C4D11BF1B1A239AB8BFAAFFA1586D95EAD57EFCA05E5E954368DEFB7BDD6B9F0CF4CBF7762468E86D220F7976890004A72FC4C5FDB6EA46B39844124F0B94F4D7DD32B32B442AEACBBB0CF859F314A22F8402AB88B32D55E5C2AC2E855031B993ACB2D581A54306ABAB9501223418BBB40C7AC249BF7834703B649DFC0B89C1D4294D07F65E10AEA07E6F97CABB01A0B690525EC03ACB3F93C163E1EF";
const ISS: &str = "https://idp.example";
const NOW: i64 = 1_800_000_000;

struct Fixture {
    pair: EcdsaKeyPair,
    jwks: Jwks,
    rng: SystemRandom,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let rng = SystemRandom::new();
        let pkcs8 = hex::decode(EC_PKCS8).expect("hex");
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &pkcs8, &rng)
            .expect("valid PKCS#8");
        let pt = pair.public_key().as_ref();
        let ec = Jwk {
            kty: "EC".into(),
            kid: Some("ec-1".into()),
            crv: Some("P-256".into()),
            x: Some(B64.encode(&pt[1..33])),
            y: Some(B64.encode(&pt[33..65])),
            ..Jwk::default()
        };
        let rsa = Jwk {
            kty: "RSA".into(),
            kid: Some("rsa-1".into()),
            n: Some(B64.encode(hex::decode(RSA_N).expect("hex"))),
            e: Some(B64.encode([1u8, 0, 1])),
            ..Jwk::default()
        };
        Fixture {
            pair,
            jwks: Jwks {
                keys: vec![ec, rsa],
            },
            rng,
        }
    })
}

fn expect() -> Expect<'static> {
    Expect {
        issuer: ISS,
        client_id: "airlock",
        nonce: Some("n-123"),
        now: NOW,
    }
}

/// `header.payload.signature`, signed with the EC key whatever the header says.
fn signed(header: &[u8], payload: &[u8]) -> String {
    let f = fixture();
    let input = format!("{}.{}", B64.encode(header), B64.encode(payload));
    let sig = f.pair.sign(&f.rng, input.as_bytes()).expect("sign");
    format!("{input}.{}", B64.encode(sig.as_ref()))
}

const EC_HEADER: &[u8] = br#"{"alg":"ES256","kid":"ec-1"}"#;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let f = fixture();
    match mode % 4 {
        0 => {
            if let Ok(token) = std::str::from_utf8(rest) {
                let _ = verify(token, &f.jwks, &expect());
            }
        }
        1 => {
            let _ = verify(&signed(EC_HEADER, rest), &f.jwks, &expect());
        }
        2 => {
            let (h, p) = match rest.iter().position(|&b| b == b'\n') {
                Some(i) => (&rest[..i], &rest[i + 1..]),
                None => (rest, &b"{}"[..]),
            };
            let _ = verify(&signed(h, p), &f.jwks, &expect());
        }
        _ => {
            let Ok(jwks) = serde_json::from_slice::<Jwks>(rest) else {
                return;
            };
            let claims = serde_json::json!({"iss": ISS, "aud": "airlock", "sub": "alice",
                "exp": NOW + 300, "iat": NOW - 5, "nonce": "n-123"});
            let token = signed(EC_HEADER, claims.to_string().as_bytes());
            let _ = verify(&token, &jwks, &expect());
        }
    }
});
