//! Bad input at the edge: the right 4xx with a problem+json body, never a
//! panic, never a partial write.

use crate::both_stores;
use crate::kit::*;

fn head(s: &Server) -> u64 {
    s.json(&s.admin, &["audit", "verify"])["events"]
        .as_u64()
        .unwrap()
}

both_stores!(bad_requests_get_problem_json_and_write_nothing, |db| {
    let s = Server::start(Setup::new(db));
    let alice = s.token("alice");
    let expired = s.json(
        &s.admin,
        &["token", "create", "--user", "alice", "--ttl", "1s"],
    )["token"]
        .as_str()
        .unwrap()
        .to_string();
    std::thread::sleep(std::time::Duration::from_millis(1200));
    let before = head(&s);
    let ok_body = r#"{"entitlement":"payments-db-write","duration":"5m","reason":"INC-1"}"#;
    let big = format!(
        r#"{{"entitlement":"payments-db-write","duration":"5m","reason":"{}"}}"#,
        "x".repeat(70 * 1024)
    );
    // (method, path, token, body, expected status, text the detail must contain)
    type Case<'a> = (
        &'a str,
        &'a str,
        Option<&'a str>,
        Option<String>,
        u16,
        &'a str,
    );
    let cases: Vec<Case> = vec![
        (
            "POST",
            "/api/v1/requests",
            Some(&alice),
            Some("{".into()),
            400,
            "invalid JSON",
        ),
        (
            "POST",
            "/api/v1/requests",
            Some(&alice),
            Some(ok_body.replace('}', r#","sudo":true}"#)),
            400,
            "unknown field `sudo`",
        ),
        (
            "POST",
            "/api/v1/requests",
            Some(&alice),
            Some(big),
            413,
            "larger than",
        ),
        (
            "POST",
            "/api/v1/requests",
            Some(&alice),
            Some(ok_body.replace("payments-db-write", "nope")),
            404,
            "entitlement `nope`",
        ),
        (
            "POST",
            "/api/v1/requests",
            Some(&alice),
            Some(ok_body.replace("5m", "5 minutes")),
            400,
            "not a duration",
        ),
        (
            "POST",
            "/api/v1/requests",
            Some(&alice),
            Some(ok_body.replace("5m", "2h")),
            400,
            "maximum of 1h",
        ),
        (
            "POST",
            "/api/v1/requests",
            Some(&alice),
            Some(ok_body.replace("5m", "0s")),
            400,
            "positive",
        ),
        (
            "POST",
            "/api/v1/requests",
            Some(&alice),
            Some(ok_body.replace("INC-1", "because")),
            400,
            "does not match",
        ),
        (
            "POST",
            "/api/v1/requests",
            Some(&alice),
            Some(ok_body.replace("INC-1", "INC-1\\u001b[31m")),
            400,
            "control characters",
        ),
        (
            "POST",
            "/api/v1/requests",
            None,
            Some(ok_body.into()),
            401,
            "missing bearer token",
        ),
        (
            "POST",
            "/api/v1/requests",
            Some("alk_forged"),
            Some(ok_body.into()),
            401,
            "unknown token",
        ),
        (
            "POST",
            "/api/v1/requests",
            Some(&expired),
            Some(ok_body.into()),
            401,
            "expired",
        ),
        (
            "GET",
            "/api/v1/requests/..%2Fetc",
            Some(&alice),
            None,
            404,
            "not found",
        ),
        (
            "GET",
            "/api/v1/requests/aaaaaaaaaaaaaaaa",
            Some(&alice),
            None,
            404,
            "not found",
        ),
        (
            "GET",
            "/api/v1/requests?state=bogus",
            Some(&alice),
            None,
            400,
            "not one of",
        ),
        (
            "GET",
            "/api/v1/requests?colour=red",
            Some(&alice),
            None,
            400,
            "unknown field",
        ),
        (
            "POST",
            "/api/v1/requests/aaaaaaaaaaaaaaaa/reviews",
            Some(&alice),
            Some(r#"{"decision":"maybe"}"#.into()),
            400,
            "approve or deny",
        ),
        (
            "POST",
            "/api/v1/tokens",
            Some(&alice),
            Some(r#"{"user":"alice","admin":true}"#.into()),
            403,
            "only admins",
        ),
        (
            "POST",
            "/api/v1/tokens",
            Some(&s.admin),
            Some(r#"{"user":"bad name"}"#.into()),
            400,
            "invalid user",
        ),
        (
            "GET",
            "/api/v1/nothing-here",
            Some(&alice),
            None,
            404,
            "no such endpoint",
        ),
    ];
    for (method, path, token, body, status, needle) in cases {
        let (got, ctype, v) = s.http(method, path, token, body.as_deref());
        assert_eq!(got, status, "{method} {path}: {v}");
        assert_eq!(ctype, "application/problem+json", "{method} {path}");
        assert_eq!(v["status"], status, "{v}");
        assert!(
            v["detail"].as_str().unwrap_or("").contains(needle),
            "{method} {path}: {v}"
        );
    }
    assert_eq!(head(&s), before, "refused input wrote no audit event");
    assert!(
        s.json(&s.admin, &["list"]).as_array().unwrap().is_empty(),
        "and no request"
    );
    assert!(!s.log_text().contains("panicked"));
});
