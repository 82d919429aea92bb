//! The web UI in a real headless Chromium (Debian's chromium + chromedriver):
//! request through the form, approve as another user from the queue, watch
//! the request turn active live; escaping, CSP and the audit page.
//! Screenshots are kept under target/test-artifacts/web/.

use std::time::Duration;

use serde_json::json;

use crate::kit::*;
use crate::web_http::WebClient;
use crate::webdriver::{Browser, Chromedriver};

const XSS: &str =
    "<script>document.title='pwned'</script><img src=x onerror=\"document.title='pwned'\">";

pub(crate) fn sign_in(b: &Browser, s: &Server, token: &str) {
    b.goto(&format!("{}/ui/signin", s.addr));
    let field = b.find("#token");
    assert_eq!(field.attr("type").as_deref(), Some("password"));
    field.send_keys(token);
    b.find("#token-signin button[type=submit]").click();
    b.wait_for("nav .who", Duration::from_secs(10));
}

#[test]
fn request_in_the_browser_is_approved_by_another_user_and_turns_active_live() {
    // The reviewer also audits: the last page shown is the audit log.
    let mut setup = Setup::new(Db::Sqlite);
    setup.server_extra = "auditors = [\"user:alice\", \"user:bob\"]\n".into();
    let s = Server::start(setup);
    let (alice, bob) = (s.token("alice"), s.token("bob"));
    // History the reviewer should see: an earlier, withdrawn request by alice.
    let old = id_of(&s.json(
        &alice,
        &[
            "request",
            "payments-db-write",
            "--for",
            "5m",
            "--reason",
            "CHG-1 earlier",
        ],
    ));
    s.json(&alice, &["withdraw", &old]);
    // Bob's own pending request, which he must not be able to approve.
    let own = id_of(&s.json(
        &bob,
        &[
            "request",
            "payments-db-write",
            "--for",
            "5m",
            "--reason",
            "CHG-2 bob's own",
        ],
    ));

    let driver = Chromedriver::start();
    let a = Browser::new(&driver);
    let b = Browser::new(&driver);

    // Alice requests through the form.
    sign_in(&a, &s, &alice);
    assert_eq!(a.find("nav .who").text(), "alice");
    a.goto(&format!("{}/ui/request", s.addr));
    a.find("input[name=entitlement][value=payments-db-write]")
        .click();
    a.find("#duration").send_keys("10m");
    a.find("#reason").send_keys(&format!("INC-42 {XSS}"));
    a.screenshot("01-request-form");
    a.find("#request-form button[type=submit]").click();
    a.wait_text("#state", Duration::from_secs(10), |t| t == "pending");
    let id = a.url().rsplit('/').next().unwrap().to_string();
    // The reason is shown as text; nothing in it ran.
    assert!(a
        .find("#reason")
        .text()
        .contains("<script>document.title='pwned'</script>"));
    assert_ne!(a.title(), "pwned");
    assert_eq!(
        a.exec(
            "return document.querySelectorAll('main script, main img').length;",
            vec![]
        ),
        json!(0)
    );
    a.screenshot("02-request-pending");

    // Bob sees it in his queue with reason and alice's history, approves with a comment.
    sign_in(&b, &s, &bob);
    b.goto(&format!("{}/ui/reviews", s.addr));
    let item = format!("article[data-request=\"{id}\"]");
    let text = b.find(&item).text();
    assert!(
        text.contains("payments-db-write") && text.contains("alice"),
        "{text}"
    );
    assert!(
        text.contains("INC-42 <script>"),
        "reason shown escaped: {text}"
    );
    assert!(text.contains("10m"), "how long: {text}");
    assert!(
        text.contains("CHG-1 earlier") && text.contains("withdrawn"),
        "history: {text}"
    );
    assert!(
        b.find_all(&format!("article[data-request=\"{own}\"]"))
            .is_empty(),
        "own request not in the queue"
    );
    assert_ne!(b.title(), "pwned");
    b.screenshot("03-review-queue");
    b.find(&format!("{item} input[name=comment]"))
        .send_keys("looks right");
    b.find(&format!("{item} button.approve")).click();
    b.wait_text("#reviews", Duration::from_secs(10), |t| {
        t.contains("bob approved") && t.contains("looks right")
    });

    // Alice's page (never reloaded) turns active with time left.
    a.wait_text("#state", Duration::from_secs(20), |t| t == "active");
    let left = a.wait_text("#time-left", Duration::from_secs(5), |t| {
        t.ends_with(" left")
    });
    assert!(left.starts_with('9') || left.starts_with("10m"), "{left}");
    a.wait_text("#reviews", Duration::from_secs(5), |t| {
        t.contains("bob approved") && t.contains("looks right")
    });
    assert_eq!(
        a.exec(
            "return document.getElementById('withdraw').closest('form').hidden;",
            vec![]
        ),
        json!(true),
        "withdraw no longer applies once active"
    );
    a.screenshot("04-request-active-live");

    // Bob cannot approve his own request: no buttons, and a forged post is refused.
    b.goto(&format!("{}/ui/requests/{own}", s.addr));
    assert!(b.find_all("form.review").is_empty());
    let mut web = WebClient::new(&s);
    web.session = b.cookie("airlock_session");
    assert!(web.session.is_some(), "session cookie set (HttpOnly)");
    let csrf = web.get(&format!("/ui/requests/{own}")).csrf();
    let r = web.post(
        &format!("/ui/requests/{own}/review"),
        &[("csrf", &csrf), ("decision", "approve")],
    );
    assert_eq!(r.status, 403);
    assert!(
        r.body.contains("cannot review your own request"),
        "{}",
        r.body
    );
    assert_eq!(s.json(&bob, &["show", &own])["state"], "pending");

    // Grants page lists it with time left; audit page says verified.
    b.goto(&format!("{}/ui/grants", s.addr));
    assert!(b
        .find(&format!("#grants tr[data-request=\"{id}\"]"))
        .text()
        .contains("left"));
    b.goto(&format!("{}/ui/audit", s.addr));
    assert!(
        b.find("#verify").text().contains("verified"),
        "{}",
        b.find("#verify").text()
    );
    assert!(b.find("#audit").text().contains("request.approved"));
    b.screenshot("05-audit-verified");
}

#[test]
fn pages_carry_a_strict_csp_that_blocks_inline_script() {
    let s = Server::start(Setup::new(Db::Sqlite));
    let alice = s.token("alice");
    let driver = Chromedriver::start();
    let a = Browser::new(&driver);
    sign_in(&a, &s, &alice);
    // An inline script injected into the DOM is not run under the page's CSP.
    let ran = a.exec(
        "var s = document.createElement('script'); s.textContent = 'window.__inline_ran = true;'; document.body.appendChild(s); return window.__inline_ran === true;",
        vec![],
    );
    assert_eq!(ran, json!(false), "CSP must block inline scripts");
    // Our own script (script-src 'self') did load and run.
    assert_eq!(
        a.exec(
            "return document.documentElement.getAttribute('data-js');",
            vec![]
        ),
        json!("ready")
    );
    a.screenshot("06-overview");
}
