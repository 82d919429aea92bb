//! The GCP IAM emulation checked against the documented wire behaviour:
//! etags and 409 ABORTED, overwrite without etag, policy version rules,
//! bearer-token auth with Google's error bodies, and the JWT-bearer token
//! endpoint's checks. Requests are built by hand here (not by the provider)
//! so the emulation is tested independently of airlock's client.

use std::time::{SystemTime, UNIX_EPOCH};

use airlock_emulators::gcp::{Binding, GcpEmulator, Policy, CLOUD_PLATFORM_SCOPE};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use rsa::pkcs1v15::SigningKey;
use rsa::pkcs8::DecodePrivateKey;
use rsa::signature::{SignatureEncoding, Signer};
use rsa::RsaPrivateKey;
use serde_json::{json, Value};
use sha2::Sha256;

const PROJECT: &str = "projects/p1";
const SA: &str = "admin@p1.iam.gserviceaccount.com";
const LATER: &str = "request.time < timestamp(\"2099-01-01T00:00:00Z\")";

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// An RS256 JWT over `claims`, signed with the key file's private key.
fn assertion(key: &Value, claims: Value) -> String {
    let pk = RsaPrivateKey::from_pkcs8_pem(key["private_key"].as_str().unwrap()).unwrap();
    let header = json!({"alg": "RS256", "typ": "JWT", "kid": key["private_key_id"]});
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let sig = SigningKey::<Sha256>::new(pk)
        .sign(input.as_bytes())
        .to_vec();
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig))
}

fn claims(emu: &GcpEmulator) -> Value {
    json!({"iss": SA, "scope": CLOUD_PLATFORM_SCOPE, "aud": emu.token_uri(), "iat": now(), "exp": now() + 3600})
}

async fn exchange(emu: &GcpEmulator, jwt: &str) -> (u16, Value) {
    let r = reqwest::Client::new()
        .post(emu.token_uri())
        .form(&[
            ("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer"),
            ("assertion", jwt),
        ])
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

struct Fixture {
    emu: GcpEmulator,
    key: Value,
    token: String,
}

impl Fixture {
    async fn new() -> Fixture {
        let emu = GcpEmulator::start().await;
        emu.seed_policy(
            PROJECT,
            Policy {
                bindings: vec![Binding::new("roles/owner", &["user:o@example.com"])],
                ..Default::default()
            },
        );
        let key = emu.create_service_account_key(SA);
        let (status, body) = exchange(&emu, &assertion(&key, claims(&emu))).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["token_type"], "Bearer");
        assert!(body["expires_in"].as_u64().unwrap() > 0);
        let token = body["access_token"].as_str().unwrap().to_owned();
        Fixture { emu, key, token }
    }

    async fn call_with(&self, token: Option<&str>, path: &str, body: Value) -> (u16, Value) {
        let mut req = reqwest::Client::new()
            .post(format!("{}/{path}", self.emu.endpoint()))
            .json(&body);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let r = req.send().await.unwrap();
        (r.status().as_u16(), r.json().await.unwrap())
    }

    async fn call(&self, method: &str, body: Value) -> (u16, Value) {
        self.call_with(Some(&self.token), &format!("v3/{PROJECT}:{method}"), body)
            .await
    }

    async fn get(&self, version: i32) -> (u16, Value) {
        self.call(
            "getIamPolicy",
            json!({"options": {"requestedPolicyVersion": version}}),
        )
        .await
    }
}

fn status_of(body: &Value) -> &str {
    body["error"]["status"].as_str().unwrap_or_default()
}

fn message_of(body: &Value) -> &str {
    body["error"]["message"].as_str().unwrap_or_default()
}

#[tokio::test]
async fn every_write_changes_the_etag_and_a_stale_etag_is_aborted() {
    let f = Fixture::new().await;
    let (s, p) = f.get(3).await;
    assert_eq!(s, 200);
    let etag0 = p["etag"].as_str().unwrap().to_owned();
    let mut write = p.clone();
    write["bindings"]
        .as_array_mut()
        .unwrap()
        .push(json!({"role": "roles/viewer", "members": ["user:a@example.com"]}));
    let (s, written) = f.call("setIamPolicy", json!({ "policy": write })).await;
    assert_eq!(s, 200, "{written}");
    assert_ne!(written["etag"], etag0);
    assert_eq!(f.get(3).await.1["etag"], written["etag"]);

    // The same write again carries what is now a stale etag.
    let (s, err) = f.call("setIamPolicy", json!({ "policy": write })).await;
    assert_eq!(s, 409);
    assert_eq!(err["error"]["code"], 409);
    assert_eq!(status_of(&err), "ABORTED");
    assert!(message_of(&err).contains("concurrent policy changes"));
    assert_eq!(f.emu.stats().conflicts, 1);
}

#[tokio::test]
async fn a_write_without_etag_overwrites() {
    let f = Fixture::new().await;
    let (s, p) = f
        .call(
            "setIamPolicy",
            json!({"policy": {"bindings": [{"role": "roles/viewer", "members": ["user:a@example.com"]}]}}),
        )
        .await;
    assert_eq!(s, 200, "{p}");
    let stored = f.emu.policy(PROJECT).unwrap();
    assert_eq!(
        stored.bindings,
        vec![Binding::new("roles/viewer", &["user:a@example.com"])]
    );
}

#[tokio::test]
async fn conditions_need_version_3_on_write_and_on_read() {
    let f = Fixture::new().await;
    let etag = f.get(3).await.1["etag"].clone();
    let conditional = json!({"role": "roles/viewer", "members": ["user:a@example.com"],
        "condition": {"title": "t", "expression": LATER}});
    let (s, err) = f
        .call(
            "setIamPolicy",
            json!({"policy": {"version": 1, "etag": etag, "bindings": [conditional]}}),
        )
        .await;
    assert_eq!((s, status_of(&err)), (400, "INVALID_ARGUMENT"), "{err}");

    let (s, ok) = f
        .call(
            "setIamPolicy",
            json!({"policy": {"version": 3, "etag": etag, "bindings": [conditional]}}),
        )
        .await;
    assert_eq!(s, 200, "{ok}");
    assert_eq!(ok["version"], 3);

    let (s, err) = f.get(1).await;
    assert_eq!((s, status_of(&err)), (400, "INVALID_ARGUMENT"));
    assert!(message_of(&err).contains("cannot be less than the existing policy version (3)"));
    let (s, err) = f.call("getIamPolicy", json!({})).await;
    assert_eq!(s, 400, "no requested version means version 1: {err}");
    let (s, err) = f.get(2).await;
    assert_eq!(s, 400, "{err}");

    // A version-1 write with the current etag may not drop the conditions silently.
    let etag = f.get(3).await.1["etag"].clone();
    let (s, err) = f
        .call(
            "setIamPolicy",
            json!({"policy": {"version": 1, "etag": etag,
                "bindings": [{"role": "roles/owner", "members": ["user:o@example.com"]}]}}),
        )
        .await;
    assert_eq!(s, 400, "{err}");
    assert!(message_of(&err).contains("Specified policy version (1)"));
}

#[tokio::test]
async fn an_unconditional_policy_reads_as_version_1_even_when_3_is_asked() {
    let f = Fixture::new().await;
    let (s, p) = f.get(3).await;
    assert_eq!(s, 200);
    assert_eq!(p["version"], 1);
    assert_eq!(f.get(1).await.0, 200);
}

#[tokio::test]
async fn malformed_policies_are_invalid_arguments() {
    let f = Fixture::new().await;
    let member = json!(["user:a@example.com"]);
    for (what, binding) in [
        (
            "untitled condition",
            json!({"role": "roles/viewer", "members": member, "condition": {"expression": LATER}}),
        ),
        (
            "bad timestamp",
            json!({"role": "roles/viewer", "members": member,
                "condition": {"title": "t", "expression": "request.time < timestamp(\"soon\")"}}),
        ),
        (
            "bad member",
            json!({"role": "roles/viewer", "members": ["alice"]}),
        ),
        ("no members", json!({"role": "roles/viewer", "members": []})),
        ("bad role", json!({"role": "viewer", "members": member})),
    ] {
        let (s, err) = f
            .call(
                "setIamPolicy",
                json!({"policy": {"version": 3, "bindings": [binding]}}),
            )
            .await;
        assert_eq!(
            (s, status_of(&err)),
            (400, "INVALID_ARGUMENT"),
            "{what}: {err}"
        );
    }
    let (s, err) = f
        .call(
            "setIamPolicy",
            json!({"policy": {"bindings": [], "unknownField": 1}}),
        )
        .await;
    assert_eq!(s, 400, "{err}");
}

#[tokio::test]
async fn api_calls_need_a_valid_bearer_token() {
    let f = Fixture::new().await;
    let path = format!("v3/{PROJECT}:getIamPolicy");
    for token in [None, Some("ya29.made-up")] {
        let (s, err) = f.call_with(token, &path, json!({})).await;
        assert_eq!((s, status_of(&err)), (401, "UNAUTHENTICATED"), "{err}");
        assert_eq!(err["error"]["code"], 401);
    }
    f.emu.revoke_tokens();
    assert_eq!(f.get(3).await.0, 401);
}

#[tokio::test]
async fn denied_callers_and_unknown_resources_get_permission_denied() {
    let f = Fixture::new().await;
    let (s, err) = f
        .call_with(Some(&f.token), "v3/projects/nope:getIamPolicy", json!({}))
        .await;
    assert_eq!((s, status_of(&err)), (403, "PERMISSION_DENIED"));
    assert!(message_of(&err).contains("resourcemanager.projects.getIamPolicy"));
    let ask = json!({"permissions": ["resourcemanager.projects.setIamPolicy"]});
    let (s, held) = f.call("testIamPermissions", ask.clone()).await;
    assert_eq!(s, 200);
    assert_eq!(held, ask);

    f.emu.deny(SA);
    let (s, err) = f.get(3).await;
    assert_eq!((s, status_of(&err)), (403, "PERMISSION_DENIED"));
    let (s, held) = f.call("testIamPermissions", ask).await;
    assert_eq!((s, held), (200, json!({})));
}

#[tokio::test]
async fn v1_project_paths_are_served_too() {
    let f = Fixture::new().await;
    let (s, p) = f
        .call_with(
            Some(&f.token),
            &format!("v1/{PROJECT}:getIamPolicy"),
            json!({}),
        )
        .await;
    assert_eq!(s, 200, "{p}");
    assert_eq!(p["bindings"][0]["role"], "roles/owner");
    let (s, _) = f
        .call_with(Some(&f.token), "v1/folders/1:getIamPolicy", json!({}))
        .await;
    assert_eq!(s, 404, "folders are v3 only");
}

#[tokio::test]
async fn the_token_endpoint_checks_signature_audience_and_lifetime() {
    let f = Fixture::new().await;
    let emu = &f.emu;
    let good = assertion(&f.key, claims(emu));
    let mut tampered = good.clone();
    tampered.replace_range(good.len() - 6.., "AAAAAA");
    let with = |edit: &dyn Fn(&mut Value)| {
        let mut c = claims(emu);
        edit(&mut c);
        assertion(&f.key, c)
    };
    let cases = [
        ("tampered signature", tampered, "invalid_grant"),
        (
            "wrong audience",
            with(&|c| c["aud"] = "https://oauth2.googleapis.com/token".into()),
            "invalid_grant",
        ),
        (
            "over an hour",
            with(&|c| c["exp"] = (now() + 7200).into()),
            "invalid_grant",
        ),
        (
            "expired",
            with(&|c| {
                c["iat"] = (now() - 7200).into();
                c["exp"] = (now() - 3600).into();
            }),
            "invalid_grant",
        ),
        (
            "no scope",
            with(&|c| {
                c.as_object_mut().unwrap().remove("scope");
            }),
            "invalid_scope",
        ),
        (
            "issuer is not the key's owner",
            with(&|c| c["iss"] = "someone@else.iam.gserviceaccount.com".into()),
            "invalid_grant",
        ),
        ("not a JWT", "abc".to_owned(), "invalid_grant"),
    ];
    for (what, jwt, error) in cases {
        let (s, body) = exchange(emu, &jwt).await;
        assert_eq!(
            (s, body["error"].as_str()),
            (400, Some(error)),
            "{what}: {body}"
        );
    }
    emu.delete_service_account_key(f.key["private_key_id"].as_str().unwrap());
    let (s, body) = exchange(emu, &good).await;
    assert_eq!(
        (s, body["error"].as_str()),
        (400, Some("invalid_grant")),
        "deleted key: {body}"
    );
}

#[tokio::test]
async fn the_metadata_server_wants_its_header() {
    let emu = GcpEmulator::start().await;
    emu.set_metadata_account(SA);
    let url = format!(
        "http://{}/computeMetadata/v1/instance/service-accounts/default/token",
        emu.metadata_host()
    );
    let client = reqwest::Client::new();
    assert_eq!(client.get(&url).send().await.unwrap().status(), 403);
    let r = client
        .get(&url)
        .header("Metadata-Flavor", "Google")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["token_type"], "Bearer");
}

#[tokio::test]
async fn has_role_evaluates_time_conditions() {
    use time::macros::datetime;
    let emu = GcpEmulator::start().await;
    emu.seed_policy(
        PROJECT,
        Policy {
            bindings: vec![Binding::new("roles/viewer", &["user:a@example.com"])
                .with_condition("t", "request.time < timestamp(\"2030-01-01T00:00:00Z\")")],
            ..Default::default()
        },
    );
    let (a, role) = ("user:a@example.com", "roles/viewer");
    assert!(emu.has_role(PROJECT, a, role, datetime!(2029-12-31 23:59:59 UTC)));
    assert!(!emu.has_role(PROJECT, a, role, datetime!(2030-01-01 0:00 UTC)));
    assert!(!emu.has_role(
        PROJECT,
        "user:b@example.com",
        role,
        datetime!(2029-01-01 0:00 UTC)
    ));
    assert_eq!(emu.policy(PROJECT).unwrap().version, 3);
}
