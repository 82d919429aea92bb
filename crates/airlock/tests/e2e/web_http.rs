//! Plain-HTTP tests of the web UI: every page's status, sign-in, CSRF,
//! security headers, strict form parsing and escaping (no browser needed).

use std::time::Duration;

use crate::kit::*;

/// A cookie-carrying HTTP client for `/ui` (redirects not followed).
pub struct WebClient {
    pub base: String,
    agent: ureq::Agent,
    /// `airlock_session` value once signed in.
    pub session: Option<String>,
}

/// Status, headers of interest and body of a response.
pub struct Page {
    pub status: u16,
    pub location: Option<String>,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Page {
    /// The first value of header `name`.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The value of the first hidden `csrf` field on the page.
    pub fn csrf(&self) -> String {
        value_after(&self.body, "name=\"csrf\" value=\"").expect("page has a csrf field")
    }
}

fn value_after(body: &str, marker: &str) -> Option<String> {
    let start = body.find(marker)? + marker.len();
    let end = body[start..].find('"')?;
    Some(body[start..start + end].to_string())
}

fn set_cookie_value(p: &Page, name: &str) -> Option<String> {
    p.headers
        .iter()
        .filter(|(k, _)| k.eq_ignore_ascii_case("set-cookie"))
        .find_map(|(_, v)| {
            v.strip_prefix(&format!("{name}="))
                .map(|r| r.split(';').next().unwrap_or("").to_string())
        })
}

impl WebClient {
    pub fn new(s: &Server) -> WebClient {
        WebClient {
            base: s.addr.clone(),
            agent: ureq::AgentBuilder::new()
                .redirects(0)
                .timeout(Duration::from_secs(10))
                .build(),
            session: None,
        }
    }

    /// A request with `cookies`, optionally a urlencoded form body.
    pub fn call(
        &self,
        method: &str,
        path: &str,
        cookies: &[(&str, &str)],
        form: Option<&[(&str, &str)]>,
    ) -> Page {
        let mut req = self.agent.request(method, &format!("{}{path}", self.base));
        let mut jar: Vec<String> = cookies.iter().map(|(k, v)| format!("{k}={v}")).collect();
        if let Some(s) = &self.session {
            jar.push(format!("airlock_session={s}"));
        }
        if !jar.is_empty() {
            req = req.set("Cookie", &jar.join("; "));
        }
        let res = match form {
            Some(f) => req.send_form(f),
            None => req.call(),
        };
        let resp = match res {
            Ok(r) => r,
            Err(ureq::Error::Status(_, r)) => r,
            Err(e) => panic!("transport error: {e}"),
        };
        let headers = resp
            .headers_names()
            .into_iter()
            .flat_map(|n| {
                resp.all(&n)
                    .into_iter()
                    .map(move |v| (n.clone(), v.to_string()))
                    .collect::<Vec<_>>()
            })
            .collect();
        Page {
            status: resp.status(),
            location: resp.header("location").map(str::to_string),
            headers,
            body: resp.into_string().unwrap_or_default(),
        }
    }

    pub fn get(&self, path: &str) -> Page {
        self.call("GET", path, &[], None)
    }

    pub fn post(&self, path: &str, form: &[(&str, &str)]) -> Page {
        self.call("POST", path, &[], Some(form))
    }

    /// Signs in with an API token through the sign-in form.
    pub fn sign_in(&mut self, token: &str) {
        let p = self.get("/ui/signin");
        let pre = set_cookie_value(&p, "airlock_signin").expect("sign-in cookie");
        let r = self.call(
            "POST",
            "/ui/signin/token",
            &[("airlock_signin", &pre)],
            Some(&[("csrf", &p.csrf()), ("token", token)]),
        );
        assert_eq!(r.status, 303, "sign-in failed: {}", r.body);
        self.session = Some(set_cookie_value(&r, "airlock_session").expect("session cookie"));
    }
}

#[test]
fn every_page_needs_a_session_and_renders_with_security_headers() {
    // alice may read the audit page as an auditor; carol, unrelated, may not.
    let mut setup = Setup::new(Db::Sqlite);
    setup.server_extra = "auditors = [\"user:alice\"]\n".into();
    let s = Server::start(setup);
    let alice = s.token("alice");
    let r = s.json(
        &alice,
        &[
            "request",
            "payments-db-write",
            "--for",
            "10m",
            "--reason",
            "INC-1 <b>bold</b>",
        ],
    );
    let id = id_of(&r);
    let mut web = WebClient::new(&s);
    let pages = [
        "/ui/".to_string(),
        "/ui/request".into(),
        "/ui/requests".into(),
        format!("/ui/requests/{id}"),
        "/ui/reviews".into(),
        "/ui/grants".into(),
        "/ui/runs".into(),
        "/ui/audit".into(),
    ];
    for p in &pages {
        let r = web.get(p);
        assert_eq!(r.status, 303, "{p} without a session");
        assert_eq!(r.location.as_deref(), Some("/ui/signin"), "{p}");
    }
    web.sign_in(&alice);
    for p in &pages {
        let r = web.get(p);
        assert_eq!(r.status, 200, "{p}: {}", r.body);
        assert_eq!(
            r.header("content-type"),
            Some("text/html; charset=utf-8"),
            "{p}"
        );
        assert_eq!(
            r.header("content-security-policy"),
            Some(airlock_server_csp()),
            "{p}"
        );
        assert_eq!(r.header("x-content-type-options"), Some("nosniff"), "{p}");
        assert_eq!(r.header("referrer-policy"), Some("same-origin"), "{p}");
        assert_eq!(r.header("cache-control"), Some("no-store"), "{p}");
        assert!(
            !r.body.contains("<b>bold</b>"),
            "{p} shows the reason unescaped"
        );
        assert!(
            !r.body.contains("<script>") && !r.body.contains(" style="),
            "{p} has inline script or style"
        );
    }
    assert!(web
        .get(&format!("/ui/requests/{id}"))
        .body
        .contains("INC-1 &lt;b&gt;bold&lt;/b&gt;"));
    let mut other = WebClient::new(&s);
    other.sign_in(&s.token("carol"));
    let r = other.get("/ui/audit");
    assert_eq!(r.status, 403, "{}", r.body);
    assert!(r.body.contains("auditors"), "{}", r.body);
    let r = other.get(&format!("/ui/requests/{id}"));
    assert_eq!(
        r.status, 404,
        "carol may not read alice's request: {}",
        r.body
    );
    let css = web.get("/ui/static/app.css");
    assert_eq!(
        (css.status, css.header("content-type")),
        (200, Some("text/css; charset=utf-8"))
    );
    let js = web.get("/ui/static/app.js");
    assert_eq!(
        (js.status, js.header("content-type")),
        (200, Some("text/javascript; charset=utf-8"))
    );
    let missing = web.get("/ui/no-such-page");
    assert_eq!(missing.status, 404);
    assert!(missing.body.contains("There is no such page"));
}

fn airlock_server_csp() -> &'static str {
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
}

#[test]
fn sign_in_refuses_bad_tokens_and_forged_forms() {
    let s = Server::start(Setup::new(Db::Sqlite));
    let web = WebClient::new(&s);
    let p = web.get("/ui/signin");
    assert_eq!(p.status, 200);
    assert!(p.body.contains("Sign in with token"));
    assert!(
        !p.body.contains("Sign in with SSO"),
        "no [auth.oidc] configured"
    );
    let pre = set_cookie_value(&p, "airlock_signin").unwrap();
    let bad = web.call(
        "POST",
        "/ui/signin/token",
        &[("airlock_signin", &pre)],
        Some(&[("csrf", &p.csrf()), ("token", "alk_nope")]),
    );
    assert_eq!(bad.status, 401);
    assert!(bad.body.contains("unknown token"), "{}", bad.body);
    // No double-submit cookie, or a different one: a forged cross-site sign-in.
    let forged = web.post(
        "/ui/signin/token",
        &[("csrf", &p.csrf()), ("token", &s.admin)],
    );
    assert_eq!(forged.status, 403);
    let other = web.call(
        "POST",
        "/ui/signin/token",
        &[("airlock_signin", "x")],
        Some(&[("csrf", &p.csrf()), ("token", &s.admin)]),
    );
    assert_eq!(other.status, 403);
    let extra = web.call(
        "POST",
        "/ui/signin/token",
        &[("airlock_signin", &pre)],
        Some(&[("csrf", &p.csrf()), ("token", &s.admin), ("admin", "true")]),
    );
    assert_eq!(
        extra.status, 400,
        "unknown fields are refused: {}",
        extra.body
    );
    assert!(extra.body.contains("unknown field"), "{}", extra.body);
}

#[test]
fn forms_without_the_right_csrf_token_are_refused_and_change_nothing() {
    let s = Server::start(Setup::new(Db::Sqlite));
    let (alice, bob) = (s.token("alice"), s.token("bob"));
    let id = id_of(&s.json(
        &alice,
        &[
            "request",
            "payments-db-write",
            "--for",
            "10m",
            "--reason",
            "INC-7",
        ],
    ));
    let mut web = WebClient::new(&s);
    web.sign_in(&bob);
    let csrf = web.get("/ui/reviews").csrf();
    let path = format!("/ui/requests/{id}/review");
    let none = web.post(&path, &[("decision", "approve")]);
    assert_eq!(none.status, 403);
    assert!(none.body.contains("CSRF"), "{}", none.body);
    let wrong = web.post(&path, &[("csrf", "00"), ("decision", "approve")]);
    assert_eq!(wrong.status, 403);
    assert_eq!(s.json(&alice, &["show", &id])["state"], "pending");
    let unknown = web.post(
        &path,
        &[("csrf", &csrf), ("decision", "approve"), ("count", "9")],
    );
    assert_eq!(unknown.status, 400, "{}", unknown.body);
    let bad = web.post(&path, &[("csrf", &csrf), ("decision", "maybe")]);
    assert_eq!(bad.status, 400);
    assert_eq!(s.json(&alice, &["show", &id])["state"], "pending");
    let ok = web.post(
        &path,
        &[
            ("csrf", &csrf),
            ("decision", "approve"),
            ("comment", "fine"),
        ],
    );
    assert_eq!(ok.status, 303, "{}", ok.body);
    let r = s.wait_for(&alice, &id, 10, |r| r["state"] == "active");
    assert_eq!(r["reviews"][0]["comment"], "fine");
    // Another session's CSRF token does not work for this one.
    let mut other = WebClient::new(&s);
    other.sign_in(&alice);
    let theirs = other.get("/ui/").csrf();
    assert_ne!(theirs, csrf);
    let cross = web.post(&format!("/ui/requests/{id}/revoke"), &[("csrf", &theirs)]);
    assert_eq!(cross.status, 403);
    assert_eq!(s.json(&alice, &["show", &id])["state"], "active");
}

#[test]
fn request_form_errors_are_shown_on_the_form_with_the_input_kept() {
    let s = Server::start(Setup::new(Db::Sqlite));
    let alice = s.token("alice");
    let mut web = WebClient::new(&s);
    web.sign_in(&alice);
    let form = web.get("/ui/request");
    assert!(
        form.body.contains("Write access to the payments table"),
        "description shown"
    );
    assert!(form.body.contains("reason must match"), "reason rule shown");
    assert!(
        !form.body.contains("payments-breakglass"),
        "break-glass is not offered"
    );
    let r = web.post(
        "/ui/request",
        &[
            ("csrf", &form.csrf()),
            ("entitlement", "payments-db-write"),
            ("duration", "3h"),
            ("reason", "INC-9 <i>x</i>"),
        ],
    );
    assert_eq!(r.status, 400);
    assert!(r.body.contains("longer than the maximum"), "{}", r.body);
    assert!(
        r.body.contains("INC-9 &lt;i&gt;x&lt;/i&gt;"),
        "input kept, escaped"
    );
    let ok = web.post(
        "/ui/request",
        &[
            ("csrf", &form.csrf()),
            ("entitlement", "payments-db-write"),
            ("duration", "30m"),
            ("reason", "INC-9"),
        ],
    );
    assert_eq!(ok.status, 303, "{}", ok.body);
    assert!(ok.location.unwrap().starts_with("/ui/requests/"));
}

#[test]
fn reviews_page_lists_open_post_incident_reviews_for_reviewers_until_closed() {
    let s = Server::start(Setup::new(Db::Sqlite));
    let (alice, bob) = (s.token("alice"), s.token("bob"));
    let id = id_of(&s.json(
        &alice,
        &[
            "breakglass",
            "payments-breakglass",
            "--for",
            "5m",
            "--reason",
            "INC-9 outage",
        ],
    ));
    let mut mine = WebClient::new(&s);
    mine.sign_in(&alice);
    assert!(
        !mine.get("/ui/reviews").body.contains(&id),
        "the requester never reviews their own break-glass"
    );
    let mut web = WebClient::new(&s);
    web.sign_in(&bob);
    let page = web.get("/ui/reviews");
    assert!(
        page.body.contains("Post-incident reviews")
            && page.body.contains(&format!("data-post-review=\"{id}\"")),
        "{}",
        page.body
    );
    let closed = web.post(
        &format!("/ui/requests/{id}/review"),
        &[
            ("csrf", &page.csrf()),
            ("decision", "approve"),
            ("comment", "justified"),
        ],
    );
    assert_eq!(closed.status, 303, "{}", closed.body);
    assert_eq!(s.json(&bob, &["show", &id])["post_review_closed"], true);
    assert!(!web.get("/ui/reviews").body.contains(&id), "closed: gone");
}

#[test]
fn the_review_form_shows_only_where_a_review_would_be_taken() {
    let s = Server::start(Setup::new(Db::Sqlite));
    let (alice, bob, carol) = (s.token("alice"), s.token("bob"), s.token("carol"));
    // two-person needs two of payments-eng (bob) and carol.
    let id = id_of(&s.json(&alice, &["request", "two-person", "--for", "5m"]));
    let path = format!("/ui/requests/{id}");
    let form = format!("action=\"/ui/requests/{id}/review\"");
    let shows = |token: &str| {
        let mut web = WebClient::new(&s);
        web.sign_in(token);
        let page = web.get(&path);
        assert_eq!(page.status, 200, "{}", page.body);
        page.body.contains(&form)
    };
    assert!(shows(&bob), "bob is a named reviewer");
    assert!(!shows(&alice), "never one's own request");
    s.json(&bob, &["review", &id, "--approve"]);
    assert!(
        !shows(&bob),
        "bob has approved already: a second review would be refused"
    );
    assert!(shows(&carol), "carol has not reviewed yet");
}
