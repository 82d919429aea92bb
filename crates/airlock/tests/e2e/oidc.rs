//! OpenID Connect login against a real provider (node-oidc-provider started by
//! ./scripts/test, see scripts/oidc/server.mjs): web login with PKCE, state
//! and nonce, sessions with CSRF, groups from the ID token, logout, the CLI's
//! device flow, and MFA-required entitlements.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::kit::{unique, Db, Server, Setup, BIN};

fn issuer() -> String {
    std::env::var("AIRLOCK_TEST_OIDC_ISSUER").unwrap_or_else(|_| {
        panic!("AIRLOCK_TEST_OIDC_ISSUER is not set: run ./scripts/test (it starts the test OIDC provider, scripts/setup/oidc.sh)")
    })
}

/// A server whose `[auth.oidc]` points at the test provider, with an entitlement
/// reviewed by the IdP-only group `sre` and one that demands MFA.
fn server(db: Db) -> Server {
    server_with(db, "")
}

/// [`server`] with more `[auth.oidc]` keys. Polls are paced at 1 s (the CLI
/// honours it), so device logins in tests stay fast.
fn server_with(db: Db, oidc_extra: &str) -> Server {
    let mut setup = Setup::new(db);
    setup.extra = format!(
        r#"
[[entitlement]]
name = "sre-console"
provider = "pg-main"
role = "{role}"
max_duration = "1h"
approvals = {{ count = 1, reviewers = ["sre"] }}

[[entitlement]]
name = "mfa-only"
provider = "pg-main"
role = "{role}"
max_duration = "1h"
mfa = true
approvals = {{ count = 1, reviewers = ["sre"] }}

[auth.oidc]
issuer = "{iss}"
client_id = "airlock"
client_secret = "airlock-test-secret"
admin_groups = ["airlock-admins"]
device_poll_interval = "1s"
{oidc_extra}
"#,
        role = crate::kit::WRITER_ROLE,
        iss = issuer()
    );
    Server::start(setup)
}

/// A minimal browser: one cookie jar for 127.0.0.1 (cookies ignore ports),
/// redirects followed by hand so each hop can be checked.
struct Browser {
    agent: ureq::Agent,
    jar: BTreeMap<String, String>,
}

struct Page {
    url: String,
    status: u16,
    location: Option<String>,
    body: String,
}

fn origin(url: &str) -> &str {
    let rest = url.find("://").map(|i| i + 3).unwrap_or(0);
    match url[rest..].find('/') {
        Some(i) => &url[..rest + i],
        None => url,
    }
}

fn absolute(base: &str, loc: &str) -> String {
    if loc.starts_with("http://") || loc.starts_with("https://") {
        loc.to_string()
    } else {
        format!("{}{loc}", origin(base))
    }
}

/// Value of `name="X" value="..."` in a page.
fn field(body: &str, name: &str) -> Option<String> {
    let at = body.find(&format!("name=\"{name}\" value=\""))? + name.len() + 15;
    Some(body[at..].split('"').next()?.to_string())
}

impl Browser {
    fn new() -> Browser {
        Browser {
            agent: ureq::AgentBuilder::new()
                .redirects(0)
                // A server may close a connection after refusing a body unread;
                // fresh connections keep such a close from failing the next call.
                .max_idle_connections(0)
                .timeout(Duration::from_secs(15))
                .build(),
            jar: BTreeMap::new(),
        }
    }

    fn cookie_header(&self) -> String {
        self.jar
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    fn send(
        &mut self,
        method: &str,
        url: &str,
        form: Option<&[(&str, &str)]>,
        headers: &[(&str, &str)],
    ) -> Page {
        let mut req = self.agent.request(method, url);
        if !self.jar.is_empty() {
            req = req.set("Cookie", &self.cookie_header());
        }
        for (k, v) in headers {
            req = req.set(k, v);
        }
        let res = match form {
            Some(f) => req.send_form(f),
            None => req.call(),
        };
        let resp = match res {
            Ok(r) | Err(ureq::Error::Status(_, r)) => r,
            Err(e) => panic!("{method} {url}: {e}"),
        };
        for c in resp.all("set-cookie") {
            let (pair, attrs) = c.split_once(';').unwrap_or((c, ""));
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let gone = v.is_empty() || attrs.contains("Max-Age=0") || attrs.contains("1970");
            if gone {
                self.jar.remove(k.trim());
            } else {
                self.jar.insert(k.trim().to_string(), v.to_string());
            }
        }
        Page {
            url: url.to_string(),
            status: resp.status(),
            location: resp.header("location").map(|l| absolute(url, l)),
            body: resp.into_string().unwrap_or_default(),
        }
    }

    fn get(&mut self, url: &str) -> Page {
        self.send("GET", url, None, &[])
    }

    /// Follows redirects and fills the provider's pages (login as `user`,
    /// ticking MFA if asked; consent; device confirmation) until a page
    /// that is none of those, or until the redirect to airlock's callback,
    /// which is returned unfetched (`url` = the callback URL).
    fn through_provider(&mut self, mut page: Page, user: &str, mfa: bool) -> Page {
        let iss = issuer();
        for _ in 0..20 {
            if let Some(loc) = page.location.clone() {
                if loc.contains("/ui/oidc/callback") {
                    return Page {
                        url: loc,
                        status: 0,
                        location: None,
                        body: String::new(),
                    };
                }
                page = self.get(&loc);
                continue;
            }
            if !page.url.starts_with(&iss) {
                return page;
            }
            if let Some(uid) = page
                .body
                .split("action=\"/interaction/")
                .nth(1)
                .map(|s| s.split('/').next().unwrap().to_string())
            {
                if page.body.contains(&format!("/interaction/{uid}/login\"")) {
                    let mut f = vec![("login", user), ("password", "password")];
                    if mfa {
                        f.push(("mfa", "otp"));
                    }
                    page = self.send(
                        "POST",
                        &format!("{iss}/interaction/{uid}/login"),
                        Some(&f[..]),
                        &[],
                    );
                    continue;
                }
                if page.body.contains(&format!("/interaction/{uid}/confirm\"")) {
                    page = self.send(
                        "POST",
                        &format!("{iss}/interaction/{uid}/confirm"),
                        Some(&[][..]),
                        &[],
                    );
                    continue;
                }
            }
            // After the device login, the provider's auto-submitting form (JS in a browser).
            if page.body.contains("<title>Submitting Callback</title>") {
                let xsrf = field(&page.body, "xsrf").expect("xsrf field");
                let code = field(&page.body, "user_code").expect("user_code field");
                page = self.send(
                    "POST",
                    &format!("{iss}/device"),
                    Some(&[("xsrf", xsrf.as_str()), ("user_code", code.as_str())][..]),
                    &[],
                );
                continue;
            }
            if page.body.contains("name=\"confirm\"") {
                let xsrf = field(&page.body, "xsrf").expect("xsrf field");
                let code = field(&page.body, "user_code").expect("user_code field");
                page = self.send(
                    "POST",
                    &format!("{iss}/device"),
                    Some(
                        &[
                            ("xsrf", xsrf.as_str()),
                            ("user_code", code.as_str()),
                            ("confirm", "yes"),
                        ][..],
                    ),
                    &[],
                );
                continue;
            }
            return page;
        }
        panic!(
            "too many steps at the provider; last page {}: {}",
            page.url, page.body
        );
    }

    fn session(&self) -> Option<String> {
        self.jar.get("airlock_session").cloned()
    }
}

/// Logs in through the web flow; returns the browser holding the session cookie.
fn web_login(s: &Server, user: &str, mfa: bool) -> Browser {
    let mut b = Browser::new();
    let start = b.get(&format!("{}/ui/login", s.addr));
    assert_eq!(start.status, 303, "{}", start.body);
    let at = b.through_provider(start, user, mfa);
    assert!(
        at.url.contains("/ui/oidc/callback"),
        "stuck at the provider: {} {}",
        at.url,
        at.body
    );
    let cb = b.get(&at.url);
    assert_eq!(
        cb.status,
        303,
        "callback failed: {}\nlog: {}",
        cb.body,
        s.log_text()
    );
    assert_eq!(
        cb.location.as_deref(),
        Some(format!("{}/ui/", s.addr).as_str())
    );
    assert!(b.session().is_some(), "no session cookie after login");
    assert!(
        !b.jar.contains_key("airlock_oidc"),
        "login cookie must be cleared"
    );
    b
}

/// The CSRF token pages embed: HMAC of the session token's hash with the
/// server's MAC key, itself HMAC(grant-secret key, "airlock-mac-key-v1").
fn csrf(s: &Server, session: &str) -> String {
    let key = hex::decode(
        std::fs::read_to_string(s.path("grant-secret.key"))
            .unwrap()
            .trim(),
    )
    .unwrap();
    let mut derive = <Hmac<Sha256> as Mac>::new_from_slice(&key).unwrap();
    derive.update(b"airlock-mac-key-v1");
    let mac_key = derive.finalize().into_bytes();
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&mac_key).unwrap();
    mac.update(b"csrf:");
    mac.update(&Sha256::digest(session.as_bytes()));
    hex::encode(mac.finalize().into_bytes())
}

fn api(
    b: &mut Browser,
    s: &Server,
    method: &str,
    path: &str,
    body: Option<&Value>,
    csrf: Option<&str>,
) -> (u16, Value) {
    let mut req = b
        .agent
        .request(method, &format!("{}{path}", s.addr))
        .set("Cookie", &b.cookie_header());
    if let Some(c) = csrf {
        req = req.set("X-CSRF-Token", c);
    }
    let res = match body {
        Some(v) => req.send_json(v.clone()),
        None => req.call(),
    };
    let r = match res {
        Ok(r) | Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("{e}"),
    };
    let status = r.status();
    (
        status,
        serde_json::from_str(&r.into_string().unwrap_or_default()).unwrap_or(Value::Null),
    )
}

#[test]
fn web_login_gives_a_session_cookie_that_works_on_the_api_with_csrf_on_writes() {
    let s = server(Db::Sqlite);
    let mut b = web_login(&s, "alice", false);
    let (status, who) = api(&mut b, &s, "GET", "/api/v1/whoami", None, None);
    assert_eq!(status, 200);
    assert_eq!(who["name"], "alice");
    let groups = who["groups"].to_string();
    assert!(
        groups.contains("engineers") && groups.contains("payments-eng"),
        "IdP and catalog groups: {groups}"
    );
    assert_eq!(who["mfa"], false);
    let (status, _) = api(&mut b, &s, "GET", "/api/v1/requests", None, None);
    assert_eq!(status, 200);

    let body = json!({"entitlement": "sre-console", "duration": "30m", "reason": "INC-1"});
    let (status, v) = api(&mut b, &s, "POST", "/api/v1/requests", Some(&body), None);
    assert_eq!(status, 403, "cookie write without X-CSRF-Token: {v}");
    let (status, v) = api(
        &mut b,
        &s,
        "POST",
        "/api/v1/requests",
        Some(&body),
        Some("0".repeat(64).as_str()),
    );
    assert_eq!(status, 403, "wrong X-CSRF-Token: {v}");
    let token = csrf(&s, &b.session().unwrap());
    let (status, v) = api(
        &mut b,
        &s,
        "POST",
        "/api/v1/requests",
        Some(&body),
        Some(&token),
    );
    assert_eq!(status, 201, "{v}");
    assert!(s
        .audit_kinds("user:alice")
        .contains(&"session.created".to_string()));
}

crate::both_stores!(groups_from_the_id_token_let_a_user_review, |db| {
    let s = server(db);
    let alice = s.token("alice");
    let r = s.json(
        &alice,
        &[
            "request",
            "sre-console",
            "--for",
            "10m",
            "--reason",
            "INC-7",
        ],
    );
    let id = crate::kit::id_of(&r);
    // bob is in `sre` only according to the identity provider.
    let mut b = web_login(&s, "bob", false);
    let token = csrf(&s, &b.session().unwrap());
    let (status, v) = api(
        &mut b,
        &s,
        "POST",
        &format!("/api/v1/requests/{id}/reviews"),
        Some(&json!({"decision": "approve", "comment": "ok"})),
        Some(&token),
    );
    assert_eq!(status, 200, "{v}");
    s.wait_for(&alice, &id, 10, |r| r["state"] == "active");
    // dave's invalid group is dropped, his valid one kept; airlock-admins makes carol admin.
    let mut d = web_login(&s, "dave", false);
    let (_, who) = api(&mut d, &s, "GET", "/api/v1/whoami", None, None);
    assert_eq!(who["groups"], json!(["payments-eng"]), "{who}");
    let mut c = web_login(&s, "carol", false);
    let (_, who) = api(&mut c, &s, "GET", "/api/v1/whoami", None, None);
    assert_eq!(who["admin"], true, "{who}");
});

#[test]
fn tampered_state_stale_cookie_and_replayed_callback_are_refused() {
    let s = server(Db::Sqlite);
    // 1. state changed in the callback URL.
    let mut b = Browser::new();
    let start = b.get(&format!("{}/ui/login", s.addr));
    let cb = b.through_provider(start, "alice", false);
    let url = cb.url.replace("state=", "state=x");
    let bad = b.get(&url);
    assert_eq!(bad.status, 400, "{}", bad.body);
    assert!(bad.body.contains("state"), "{}", bad.body);
    assert!(b.session().is_none());

    // 2. the login cookie altered (e.g. another nonce swapped in): the MAC fails.
    let mut b = Browser::new();
    let start = b.get(&format!("{}/ui/login", s.addr));
    let cb = b.through_provider(start, "alice", false);
    let cookie = b.jar.get("airlock_oidc").unwrap().clone();
    let mut parts: Vec<&str> = cookie.split('.').collect();
    parts[1] = "AAAAAAAAAAAAAAAAAAAAAA";
    b.jar.insert("airlock_oidc".into(), parts.join("."));
    let bad = b.get(&cb.url);
    assert_eq!(bad.status, 400, "{}", bad.body);
    assert!(bad.body.contains("altered"), "{}", bad.body);

    // 3. a second login started in the same browser replaces the first one's cookie.
    let mut b = Browser::new();
    let first = b.get(&format!("{}/ui/login", s.addr));
    let _second = b.get(&format!("{}/ui/login", s.addr));
    let cb = b.through_provider(first, "alice", false);
    let bad = b.get(&cb.url);
    assert_eq!(bad.status, 400, "{}", bad.body);

    // 4. a callback replayed after a successful login (cookie consumed, code used).
    let mut b = Browser::new();
    let start = b.get(&format!("{}/ui/login", s.addr));
    let cb = b.through_provider(start, "alice", false);
    let ok = b.get(&cb.url);
    assert_eq!(ok.status, 303);
    let again = b.get(&cb.url);
    assert_eq!(again.status, 400, "{}", again.body);

    // 5. an error from the provider is shown, not a panic.
    let mut b = Browser::new();
    let page = b.get(&format!(
        "{}/ui/oidc/callback?error=access_denied&error_description=nope",
        s.addr
    ));
    assert_eq!(page.status, 400);
    assert!(page.body.contains("access_denied"), "{}", page.body);
}

#[test]
fn logout_revokes_the_session_and_needs_the_csrf_field() {
    let s = server(Db::Sqlite);
    let mut b = web_login(&s, "alice", false);
    let session = b.session().unwrap();
    let page = b.send(
        "POST",
        &format!("{}/ui/logout", s.addr),
        Some(&[("csrf", "wrong")][..]),
        &[],
    );
    assert_eq!(page.status, 403);
    assert_eq!(
        api(&mut b, &s, "GET", "/api/v1/requests", None, None).0,
        200
    );
    let token = csrf(&s, &session);
    let page = b.send(
        "POST",
        &format!("{}/ui/logout", s.addr),
        Some(&[("csrf", token.as_str())][..]),
        &[],
    );
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(b.session().is_none(), "cookie cleared");
    b.jar.insert("airlock_session".into(), session.clone());
    let (status, v) = api(&mut b, &s, "GET", "/api/v1/requests", None, None);
    assert_eq!(status, 401, "revoked session still works: {v}");
    assert!(s
        .audit_kinds("user:alice")
        .contains(&"session.ended".to_string()));
}

/// Runs `airlock login` with its config dir in `home`, approving the device
/// code in the browser as `user`.
fn cli_login(s: &Server, home: &std::path::Path, user: &str, mfa: bool) -> Value {
    let mut child = Command::new(BIN)
        .args(["login", "--output", "json"])
        .env("AIRLOCK_ADDR", &s.addr)
        .env_remove("AIRLOCK_TOKEN")
        .env("XDG_CONFIG_HOME", home)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    err.read_line(&mut line).unwrap();
    let url = line
        .trim()
        .strip_prefix("To log in, open ")
        .unwrap_or_else(|| panic!("no URL: {line:?}"))
        .to_string();
    assert!(
        url.starts_with(&issuer()) && url.contains("user_code="),
        "{url}"
    );
    let mut b = Browser::new();
    let first = b.get(&url);
    let done = b.through_provider(first, user, mfa);
    assert!(
        done.body.contains("id=\"done\""),
        "device login not confirmed: {}",
        done.body
    );
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "airlock login failed: {}",
        s.log_text()
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn cli_as(s: &Server, home: &std::path::Path, args: &[&str]) -> std::process::Output {
    Command::new(BIN)
        .args(args)
        .env("AIRLOCK_ADDR", &s.addr)
        .env_remove("AIRLOCK_TOKEN")
        .env("XDG_CONFIG_HOME", home)
        .output()
        .unwrap()
}

#[test]
fn cli_login_by_device_code_saves_a_private_token_that_later_commands_use() {
    use std::os::unix::fs::PermissionsExt;
    let s = server(Db::Sqlite);
    let home = std::env::temp_dir().join(unique("airlock-home-"));
    let v = cli_login(&s, &home, "bob", false);
    assert_eq!(v["user"], "bob");
    assert_eq!(v["mfa"], false);
    assert!(v["groups"].to_string().contains("sre"), "{v}");
    let file = home.join("airlock/token");
    assert_eq!(
        std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert_eq!(v["token_file"], file.display().to_string());

    let out = cli_as(
        &s,
        &home,
        &[
            "request",
            "sre-console",
            "--for",
            "10m",
            "--reason",
            "INC-9",
            "--output",
            "json",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["requester"], "bob");

    // A token file others can read is refused, with the fix named.
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = cli_as(&s, &home, &["whoami"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("chmod 600"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();

    let token = std::fs::read_to_string(&file).unwrap().trim().to_string();
    let out = cli_as(&s, &home, &["logout", "--output", "json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!file.exists(), "token file deleted");
    let (status, _, _) = s.http("GET", "/api/v1/whoami", Some(&token), None);
    assert_eq!(status, 401, "revoked on the server");
    let _ = std::fs::remove_dir_all(&home);
}

#[test]
fn polling_a_device_login_sooner_than_the_interval_gets_slow_down_with_5s_more() {
    let s = server(Db::Sqlite);
    let (status, _, start) = s.http("POST", "/api/v1/auth/device", None, Some("{}"));
    assert_eq!(status, 200, "{start}");
    assert_eq!(start["interval"], 1, "{start}");
    let body = json!({"device_code": start["device_code"]}).to_string();
    let poll = || s.http("POST", "/api/v1/auth/device/token", None, Some(&body));
    let (status, _, v) = poll();
    assert_eq!((status, &v["status"]), (202, &json!("pending")), "{v}");
    assert_eq!(v["interval"], 1, "{v}");
    // At once again: too soon. The interval grows by 5 s each time (RFC 8628 §3.5).
    let (status, _, v) = poll();
    assert_eq!((status, &v["status"]), (202, &json!("slow_down")), "{v}");
    assert_eq!(v["interval"], 6, "{v}");
    let (_, _, v) = poll();
    assert_eq!(
        (&v["status"], &v["interval"]),
        (&json!("slow_down"), &json!(11)),
        "{v}"
    );
}

#[test]
fn device_flow_false_answers_404_and_points_to_the_web_login() {
    let s = server_with(Db::Sqlite, "device_flow = false");
    let (status, _, v) = s.http("POST", "/api/v1/auth/device", None, Some("{}"));
    assert_eq!(status, 404, "{v}");
    let detail = v["detail"].as_str().unwrap_or_default();
    assert!(
        detail.contains("device login") && detail.contains("web UI"),
        "{v}"
    );
    let (status, _, v) = s.http(
        "POST",
        "/api/v1/auth/device/token",
        None,
        Some(r#"{"device_code":"x"}"#),
    );
    assert_eq!(status, 404, "{v}");
    // The web login still works.
    let b = web_login(&s, "alice", false);
    assert!(b.session().is_some());
}

#[test]
fn mfa_entitlement_is_refused_without_mfa_and_allowed_after_an_mfa_login() {
    let s = server(Db::Sqlite);
    let body = json!({"entitlement": "mfa-only", "duration": "10m", "reason": "INC-3"});
    let mut b = web_login(&s, "alice", false);
    let t = csrf(&s, &b.session().unwrap());
    let (status, v) = api(
        &mut b,
        &s,
        "POST",
        "/api/v1/requests",
        Some(&body),
        Some(&t),
    );
    assert_eq!(status, 403, "{v}");
    let detail = v["detail"].as_str().unwrap();
    assert!(
        detail.contains("multi-factor") && detail.contains("airlock login"),
        "{detail}"
    );

    let mut b = web_login(&s, "alice", true);
    let (_, who) = api(&mut b, &s, "GET", "/api/v1/whoami", None, None);
    assert_eq!(who["mfa"], true);
    let t = csrf(&s, &b.session().unwrap());
    let (status, v) = api(
        &mut b,
        &s,
        "POST",
        "/api/v1/requests",
        Some(&body),
        Some(&t),
    );
    assert_eq!(status, 201, "{v}");

    // The CLI login carries MFA too.
    let home = std::env::temp_dir().join(unique("airlock-home-"));
    let v = cli_login(&s, &home, "alice", true);
    assert_eq!(v["mfa"], true);
    let out = cli_as(
        &s,
        &home,
        &["request", "mfa-only", "--for", "10m", "--reason", "INC-4"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let _ = std::fs::remove_dir_all(&home);
}

/// Runs the web flow as `user` and returns the callback's answer (no success asserted).
fn web_callback(s: &Server, user: &str) -> Page {
    let mut b = Browser::new();
    let start = b.get(&format!("{}/ui/login", s.addr));
    let at = b.through_provider(start, user, false);
    assert!(at.url.contains("/ui/oidc/callback"), "{}", at.body);
    b.get(&at.url)
}

fn audit_reasons(s: &Server, kind: &str) -> Vec<String> {
    let out = s.cli(&s.admin, &["audit", "export"]);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|e| e["kind"] == kind)
        .map(|e| e["data"]["reason"].as_str().unwrap_or("").to_string())
        .collect()
}

crate::both_stores!(
    a_second_identity_presenting_a_bound_name_is_refused_until_an_admin_rebinds_it,
    |db| {
        let s = server(db);
        web_login(&s, "alice", false);
        // Another IdP account (another `sub`) whose preferred_username is `alice`.
        let refused = web_callback(&s, "alice-impostor");
        assert_eq!(refused.status, 403, "{}", refused.body);
        assert!(
            refused.body.contains("belongs to another identity")
                && refused.body.contains("airlock user rebind alice"),
            "{}",
            refused.body
        );
        let reasons = audit_reasons(&s, "login.refused");
        assert_eq!(reasons.len(), 1, "{reasons:?}");
        assert!(reasons[0].contains("another identity"), "{reasons:?}");
        // The real alice still logs in.
        web_login(&s, "alice", false);
        // Only an admin can release the name.
        let bob = s.token("bob");
        let out = s.cli(&bob, &["user", "rebind", "alice"]);
        assert_eq!(out.status.code(), Some(1));
        assert!(
            crate::kit::stderr(&out).contains("only admins"),
            "{}",
            crate::kit::stderr(&out)
        );
        let v = s.json(&s.admin, &["user", "rebind", "alice"]);
        assert_eq!(v["rebound"], true);
        assert!(s
            .audit_kinds("user:alice")
            .contains(&"user.rebound".to_string()));
        // Now the new account binds the name, and the old one is the stranger.
        web_login(&s, "alice-impostor", false);
        assert_eq!(web_callback(&s, "alice").status, 403);
    }
);

#[test]
fn a_user_named_like_a_reviewer_group_can_neither_log_in_nor_get_a_token() {
    let s = server(Db::Sqlite);
    // `sre` reviews sre-console; an IdP account that chose the user name `sre` must not become it.
    let refused = web_callback(&s, "sre-squatter");
    assert_eq!(refused.status, 403, "{}", refused.body);
    assert!(
        refused.body.contains("is the name of a group"),
        "{}",
        refused.body
    );
    assert!(audit_reasons(&s, "login.refused")[0].contains("name of a group"));
    for name in ["sre", "SRE", "payments-eng"] {
        let out = s.cli(&s.admin, &["token", "create", "--user", name]);
        assert_eq!(out.status.code(), Some(1), "token for {name} was created");
        assert!(
            crate::kit::stderr(&out).contains("is the name of a group"),
            "{}",
            crate::kit::stderr(&out)
        );
    }
    // A member of the group still reviews as a member.
    let _ = web_login(&s, "bob", false);
}
