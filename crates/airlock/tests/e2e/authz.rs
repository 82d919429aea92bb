//! The authorization matrix: every route of the OpenAPI document, called by
//! every kind of caller, answers with the status this table says. A route
//! missing from the table fails the test, so a new endpoint must state who
//! may call it. API routes are called with bearer tokens; web pages (which
//! take session cookies) are checked without a session here and with one in
//! web_http.rs.

use std::collections::BTreeSet;
use std::time::Duration;

use crate::kit::*;

/// Callers, in the order of the status columns below.
const ROLES: [&str; 7] = [
    "anonymous",
    "unrelated",
    "requester",
    "reviewer",
    "auditor",
    "admin",
    "locked",
];

/// `(method, path, body, [status per role])`. `{id}` is a fresh pending
/// request of the requester (made per row), `{run}` a run id and `{session}`
/// a session id that do not exist.
type Row = (&'static str, &'static str, Option<&'static str>, [u16; 7]);

const REQ: &str = r#"{"entitlement":"payments-db-write","duration":"5m","reason":"INC-1"}"#;
const BG: &str = r#"{"entitlement":"payments-breakglass","duration":"5m","reason":"INC-2"}"#;

#[rustfmt::skip]
const API: &[Row] = &[
    //                                                        anon unrel  req  rev  aud adm  lock
    ("GET",  "/healthz", None,                                [200, 200, 200, 200, 200, 200, 200]),
    ("GET",  "/readyz", None,                                 [200, 200, 200, 200, 200, 200, 200]),
    ("GET",  "/metrics", None,                                [200, 200, 200, 200, 200, 200, 200]),
    ("GET",  "/api/v1/openapi.json", None,                    [200, 200, 200, 200, 200, 200, 200]),
    ("GET",  "/api/v1/whoami", None,                          [401, 200, 200, 200, 200, 200, 403]),
    ("GET",  "/api/v1/entitlements", None,                    [401, 200, 200, 200, 200, 200, 403]),
    ("POST", "/api/v1/requests", Some(REQ),                   [401, 201, 201, 201, 201, 201, 403]),
    ("GET",  "/api/v1/requests", None,                        [401, 200, 200, 200, 200, 200, 403]),
    ("POST", "/api/v1/breakglass", Some(BG),                  [401, 403, 201, 201, 403, 403, 403]),
    ("GET",  "/api/v1/requests/{id}", None,                   [401, 404, 200, 200, 200, 200, 403]),
    ("POST", "/api/v1/requests/{id}/reviews", Some(r#"{"decision":"deny"}"#),
                                                              [401, 403, 403, 200, 403, 403, 403]),
    ("POST", "/api/v1/requests/{id}/withdraw", Some("{}"),    [401, 403, 200, 403, 403, 403, 403]),
    ("POST", "/api/v1/requests/{id}/revoke", Some("{}"),      [401, 403, 409, 409, 403, 409, 403]),
    ("GET",  "/api/v1/requests/{id}/credentials", None,       [401, 403, 409, 403, 403, 403, 403]),
    ("POST", "/api/v1/requests/{id}/credentials", Some("{}"), [401, 403, 409, 403, 403, 403, 403]),
    ("GET",  "/api/v1/requests/{id}/gateway", None,           [401, 404, 403, 403, 403, 403, 403]),
    ("GET",  "/api/v1/requests/{id}/connect", None,           [401, 400, 400, 400, 400, 400, 403]),
    ("GET",  "/api/v1/sessions", None,                        [401, 200, 200, 200, 200, 200, 403]),
    ("GET",  "/api/v1/sessions/{session}", None,              [401, 404, 404, 404, 404, 404, 403]),
    ("GET",  "/api/v1/sessions/{session}/events", None,       [401, 404, 404, 404, 404, 404, 403]),
    ("GET",  "/api/v1/sessions/{session}/recording", None,    [401, 404, 404, 404, 404, 404, 403]),
    ("POST", "/api/v1/sessions/{session}/terminate", Some("{}"),
                                                              [401, 404, 404, 404, 404, 404, 403]),
    ("GET",  "/api/v1/grants", None,                          [401, 200, 200, 200, 200, 200, 403]),
    ("GET",  "/api/v1/audit/events", None,                    [401, 403, 403, 403, 200, 200, 403]),
    ("GET",  "/api/v1/audit/verify", None,                    [401, 403, 403, 403, 200, 200, 403]),
    ("GET",  "/api/v1/audit/pubkey", None,                    [200, 200, 200, 200, 200, 200, 200]),
    ("GET",  "/api/v1/audit/checkpoint", None,                [401, 403, 403, 403, 200, 200, 403]),
    ("GET",  "/api/v1/audit/consistency?from=1&to=1", None,   [401, 403, 403, 403, 200, 200, 403]),
    ("GET",  "/api/v1/audit/proof/1", None,                   [401, 403, 403, 403, 200, 200, 403]),
    ("POST", "/api/v1/tokens", Some(r#"{"user":"zed"}"#),     [401, 403, 403, 403, 403, 201, 403]),
    ("GET",  "/api/v1/tokens", None,                          [401, 403, 403, 403, 403, 200, 403]),
    ("POST", "/api/v1/tokens/revoke", Some(r#"{"prefix":"00000000"}"#),
                                                              [401, 403, 403, 403, 403, 404, 403]),
    ("GET",  "/api/v1/drift", None,                           [401, 403, 403, 403, 403, 200, 403]),
    ("GET",  "/api/v1/locks", None,                           [401, 403, 403, 403, 403, 200, 403]),
    ("POST", "/api/v1/locks", Some(r#"{"kind":"user","name":"nobody","reason":"INC-3"}"#),
                                                              [401, 403, 403, 403, 403, 201, 403]),
    ("DELETE", "/api/v1/locks/user/nobody", None,             [401, 403, 403, 403, 403, 200, 403]),
    ("POST", "/api/v1/users/nobody/rebind", Some("{}"),       [401, 403, 403, 403, 403, 404, 403]),
    // sshd fetches these without a token; pg-main is not an SSH provider.
    ("GET",  "/api/v1/providers/pg-main/ssh/krl", None,       [404, 404, 404, 404, 404, 404, 404]),
    ("GET",  "/api/v1/providers/pg-main/ssh/ca.pub", None,    [404, 404, 404, 404, 404, 404, 404]),
    ("GET",  "/api/v1/tools", None,                           [401, 200, 200, 200, 200, 200, 403]),
    ("GET",  "/api/v1/operations", None,                      [401, 200, 200, 200, 200, 200, 403]),
    ("POST", "/api/v1/operations/nope/runs", Some(r#"{"params":{}}"#),
                                                              [401, 404, 404, 404, 404, 404, 403]),
    ("POST", "/api/v1/runs", Some(r#"{"tool":"nope","args":[]}"#),
                                                              [401, 404, 404, 404, 404, 404, 403]),
    ("GET",  "/api/v1/runs", None,                            [401, 200, 200, 200, 200, 200, 403]),
    ("GET",  "/api/v1/runs/{run}", None,                      [401, 404, 404, 404, 404, 404, 403]),
    ("POST", "/api/v1/runs/{run}/reviews", Some(r#"{"decision":"deny"}"#),
                                                              [401, 404, 404, 404, 404, 404, 403]),
    ("POST", "/api/v1/runs/{run}/start", Some("{}"),          [401, 404, 404, 404, 404, 404, 403]),
    ("POST", "/api/v1/runs/{run}/cancel", Some("{}"),         [401, 404, 404, 404, 404, 404, 403]),
    ("GET",  "/api/v1/runs/{run}/transcript", None,           [401, 404, 404, 404, 404, 404, 403]),
    ("GET",  "/api/v1/runs/{run}/stream", None,               [401, 404, 404, 404, 404, 404, 403]),
    // Authenticated by Slack's signature, not a token; Slack is not configured here.
    ("POST", "/api/v1/slack/interactions", Some("payload=x"), [404, 404, 404, 404, 404, 404, 404]),
    // OIDC is not configured here: the device flow is not offered.
    ("POST", "/api/v1/auth/device", Some("{}"),               [404, 404, 404, 404, 404, 404, 404]),
    ("POST", "/api/v1/auth/device/token", Some(r#"{"device_code":"x"}"#),
                                                              [404, 404, 404, 404, 404, 404, 404]),
    // Last: it revokes the caller's own token (start-up admin tokens cannot be).
    ("POST", "/api/v1/auth/logout", Some("{}"),               [401, 200, 200, 200, 200, 400, 403]),
];

/// Web pages without a session: sign-in pages and assets answer, everything
/// else sends the browser to sign in; OIDC pages explain (400) that `[auth.oidc]` is not set.
#[rustfmt::skip]
const WEB: &[(&str, &str, u16)] = &[
    ("GET", "/ui/", 303), ("GET", "/ui/signin", 200), ("POST", "/ui/signin/token", 403),
    ("GET", "/ui/request", 303), ("POST", "/ui/request", 303), ("GET", "/ui/requests", 303),
    ("GET", "/ui/requests/{id}", 303), ("POST", "/ui/requests/{id}/review", 303),
    ("POST", "/ui/requests/{id}/revoke", 303), ("POST", "/ui/requests/{id}/withdraw", 303),
    ("GET", "/ui/reviews", 303), ("GET", "/ui/grants", 303), ("GET", "/ui/runs", 303),
    ("GET", "/ui/runs/{id}", 303), ("POST", "/ui/runs/{id}/review", 303), ("GET", "/ui/audit", 303),
    ("GET", "/ui/sessions", 303), ("GET", "/ui/sessions/{id}", 303),
    ("GET", "/ui/static/app.css", 200), ("GET", "/ui/static/app.js", 200),
    ("GET", "/ui/login", 400), ("GET", "/ui/oidc/callback", 400), ("POST", "/ui/logout", 200),
];

fn call(s: &Server, method: &str, path: &str, token: Option<&str>, body: Option<&str>) -> u16 {
    let agent = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(10))
        .redirects(0)
        .build();
    let mut req = agent.request(method, &format!("{}{path}", s.addr));
    if let Some(t) = token {
        req = req.set("Authorization", &format!("Bearer {t}"));
    }
    let res = match body {
        Some(b) if b.starts_with("payload=") => req
            .set("Content-Type", "application/x-www-form-urlencoded")
            .send_string(b),
        Some(b) => req.set("Content-Type", "application/json").send_string(b),
        None => req.call(),
    };
    match res {
        Ok(r) => r.status(),
        Err(ureq::Error::Status(code, _)) => code,
        Err(e) => panic!("{method} {path}: {e}"),
    }
}

/// The OpenAPI path a table path stands for.
fn template(path: &str) -> String {
    let path = path.split('?').next().unwrap_or(path);
    path.replace("/api/v1/audit/proof/1", "/api/v1/audit/proof/{seq}")
        .replace("/providers/pg-main/", "/providers/{name}/")
        .replace("/operations/nope/", "/operations/{name}/")
        .replace("/locks/user/nobody", "/locks/{kind}/{name}")
        .replace("/users/nobody/", "/users/{name}/")
        .replace("{run}", "{id}")
        .replace("{session}", "{id}")
}

#[test]
fn every_route_answers_every_kind_of_caller_as_the_table_says() {
    let mut setup = Setup::new(Db::Sqlite);
    setup.server_extra = "auditors = [\"user:dave\"]\n".into();
    let s = Server::start(setup);
    let (erin, alice, bob, dave, mallory) = (
        s.token("erin"),
        s.token("alice"),
        s.token("bob"),
        s.token("dave"),
        s.token("mallory"),
    );
    s.json(&s.admin, &["lock", "user", "mallory", "--reason", "INC-0"]);
    // A signed tree head exists within a second of the first events.
    std::thread::sleep(Duration::from_millis(1500));
    let tokens: [Option<&str>; 7] = [
        None,
        Some(&erin),
        Some(&alice),
        Some(&bob),
        Some(&dave),
        Some(&s.admin),
        Some(&mallory),
    ];

    // Every documented route is in a table.
    let (_, _, doc) = s.http("GET", "/api/v1/openapi.json", None, None);
    let documented: BTreeSet<(String, String)> = doc["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(p, ops)| {
            ops.as_object()
                .unwrap()
                .keys()
                .map(move |m| (m.to_uppercase(), p.clone()))
        })
        .collect();
    let tabled: BTreeSet<(String, String)> = API
        .iter()
        .map(|(m, p, _, _)| (m.to_string(), template(p)))
        .chain(WEB.iter().map(|(m, p, _)| (m.to_string(), p.to_string())))
        .collect();
    let missing: Vec<_> = documented.difference(&tabled).collect();
    assert!(
        missing.is_empty(),
        "routes missing from the authorization table: {missing:?}"
    );
    let stale: Vec<_> = tabled.difference(&documented).collect();
    assert!(
        stale.is_empty(),
        "table rows for undocumented routes: {stale:?}"
    );

    let mut wrong = vec![];
    for (method, path, body, want) in API {
        let mut got = [0u16; 7];
        for (i, token) in tokens.iter().enumerate() {
            // A fresh pending request per call, so one caller's review or
            // withdrawal does not change what the next one sees.
            let path = if path.contains("{id}") {
                let id = id_of(&s.json(
                    &alice,
                    &[
                        "request",
                        "payments-db-write",
                        "--for",
                        "5m",
                        "--reason",
                        "INC-1",
                    ],
                ));
                path.replace("{id}", &id)
            } else {
                path.replace("{run}", "run_doesnotexist0")
                    .replace("{session}", "ses_doesnotexist0")
            };
            got[i] = call(&s, method, &path, *token, *body);
        }
        if got != *want {
            wrong.push(format!("{method} {path}: want {want:?} got {got:?}"));
        }
    }
    for (method, path, want) in WEB {
        let p = path.replace("{id}", "aaaaaaaaaaaaaaaa");
        let body = (*method == "POST").then_some("x=1");
        let got = call(&s, method, &p, None, body);
        if got != *want {
            wrong.push(format!(
                "{method} {path} (no session): want {want} got {got}"
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "columns: {ROLES:?}\n{}\nlog: {}",
        wrong.join("\n"),
        s.log_text()
    );
}
