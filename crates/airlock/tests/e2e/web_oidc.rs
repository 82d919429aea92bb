//! The browser acceptance: in a real headless Chromium, log in
//! through the real OIDC provider, request, approve as another user (who also
//! logged in through the provider), and see the grant active — with
//! screenshots kept under target/test-artifacts/web/.

use std::time::Duration;

use crate::kit::*;
use crate::webdriver::{Browser, Chromedriver};

fn issuer() -> String {
    std::env::var("AIRLOCK_TEST_OIDC_ISSUER").unwrap_or_else(|_| {
        panic!(
            "AIRLOCK_TEST_OIDC_ISSUER is not set: run ./scripts/test (it starts the OIDC provider)"
        )
    })
}

/// Signs in through `/ui/login` → provider login form → consent → back on /ui/.
fn sso_sign_in(b: &Browser, s: &Server, user: &str, mfa: bool, shot: &str) {
    b.goto(&format!("{}/ui/signin", s.addr));
    b.find("#sso").click();
    b.find("input[name=login]").send_keys(user);
    b.find("input[name=password]").send_keys("password");
    if mfa {
        b.find("input[name=mfa]").click();
    }
    b.screenshot(shot);
    b.find("#submit").click();
    b.find("#allow").click();
    b.wait_text("nav .who", Duration::from_secs(15), |t| t == user);
    assert!(
        b.url().starts_with(&format!("{}/ui/", s.addr)),
        "back on airlock: {}",
        b.url()
    );
}

#[test]
fn sso_login_in_chromium_request_approve_as_another_user_and_see_it_active() {
    let mut setup = Setup::new(Db::Sqlite);
    setup.extra = format!(
        "\n[auth.oidc]\nissuer = \"{}\"\nclient_id = \"airlock\"\nclient_secret = \"airlock-test-secret\"\n",
        issuer()
    );
    let s = Server::start(setup);
    let driver = Chromedriver::start();
    let (a, b) = (Browser::new(&driver), Browser::new(&driver));

    // alice logs in through the identity provider (with MFA) and requests.
    sso_sign_in(&a, &s, "alice", true, "sso-01-provider-login");
    let session = a.cookie("airlock_session").expect("session cookie set");
    assert!(session.starts_with("alk_"), "a revocable airlock token");
    a.goto(&format!("{}/ui/request", s.addr));
    a.find("input[name=entitlement][value=payments-db-write]")
        .click();
    a.find("#duration").send_keys("10m");
    a.find("#reason").send_keys("INC-7 ledger fix");
    a.find("#request-form button[type=submit]").click();
    a.wait_text("#state", Duration::from_secs(10), |t| t == "pending");
    let id = a.url().rsplit('/').next().unwrap().to_string();
    a.screenshot("sso-02-requested");

    // bob logs in through the provider in his own browser; his groups come
    // from the ID token (payments-eng) and make him a reviewer.
    sso_sign_in(&b, &s, "bob", false, "sso-03-bob-login");
    b.goto(&format!("{}/ui/reviews", s.addr));
    let item = format!("article[data-request=\"{id}\"]");
    let text = b.find(&item).text();
    assert!(
        text.contains("alice") && text.contains("INC-7 ledger fix"),
        "{text}"
    );
    b.find(&format!("{item} input[name=comment]"))
        .send_keys("approved via SSO");
    b.screenshot("sso-04-queue");
    b.find(&format!("{item} button.approve")).click();
    b.wait_text("#reviews", Duration::from_secs(10), |t| {
        t.contains("bob approved")
    });

    // alice sees it active without reloading.
    a.wait_text("#state", Duration::from_secs(20), |t| t == "active");
    a.screenshot("sso-05-active");

    // The audit log records both SSO sessions and the web-surface review.
    let out = s.cli(&s.admin, &["audit", "export"]);
    let log = String::from_utf8_lossy(&out.stdout);
    let sessions = log
        .lines()
        .filter(|l| l.contains("\"session.created\"") && l.contains("\"via\":\"oidc\""))
        .count();
    assert_eq!(sessions, 2, "{log}");
    assert!(
        log.lines()
            .any(|l| l.contains("\"request.reviewed\"") && l.contains("\"surface\":\"web\"")),
        "{log}"
    );
}
