//! Read scoping: a non-admin reads the requests and grants they made or may
//! review; the audit log is for admins and `[server] auditors` only.

use crate::both_stores;
use crate::kit::*;

fn ids(v: &serde_json::Value) -> Vec<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_string())
        .collect()
}

both_stores!(a_non_admin_reads_only_what_they_made_or_may_review, |db| {
    let mut setup = Setup::new(db);
    setup.server_extra = "auditors = [\"user:dave\"]\n".into();
    let s = Server::start(setup);
    let (alice, bob, carol, dave, erin) = (
        s.token("alice"),
        s.token("bob"),
        s.token("carol"),
        s.token("dave"),
        s.token("erin"),
    );
    // payments-db-write is reviewed by payments-eng (bob); two-person also by carol.
    let active = s.active_grant(&alice, &bob, "30m", "INC-1");
    let two = id_of(&s.json(&alice, &["request", "two-person", "--for", "5m"]));

    for (who, token, want) in [
        (
            "alice (requester)",
            &alice,
            vec![two.clone(), active.clone()],
        ),
        (
            "bob (reviews both)",
            &bob,
            vec![two.clone(), active.clone()],
        ),
        ("carol (reviews two-person)", &carol, vec![two.clone()]),
        ("erin (unrelated)", &erin, vec![]),
        ("dave (auditor)", &dave, vec![two.clone(), active.clone()]),
        ("admin", &s.admin, vec![two.clone(), active.clone()]),
    ] {
        assert_eq!(ids(&s.json(token, &["list"])), want, "{who}: list");
    }
    let (status, _, _) = s.http("GET", "/api/v1/grants", Some(&carol), None);
    assert_eq!(status, 200);
    let (_, _, grants) = s.http("GET", "/api/v1/grants", Some(&carol), None);
    assert!(
        ids(&grants).is_empty(),
        "carol reviews no active grant: {grants}"
    );
    let (_, _, grants) = s.http("GET", "/api/v1/grants", Some(&bob), None);
    assert_eq!(ids(&grants), vec![active.clone()]);

    // Showing a request one may not read looks like it does not exist.
    let out = s.cli(&erin, &["show", &active]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("not found"), "{}", stderr(&out));
    s.json(&carol, &["show", &two]);

    // The audit log: admins and auditors only.
    for token in [&alice, &bob, &erin] {
        for args in [&["audit", "export"][..], &["audit", "verify"][..]] {
            let out = s.cli(token, args);
            assert_eq!(out.status.code(), Some(1), "{args:?}");
            assert!(stderr(&out).contains("auditors"), "{}", stderr(&out));
        }
        let (status, _, _) = s.http("GET", "/api/v1/audit/events", Some(token), None);
        assert_eq!(status, 403);
    }
    assert!(s.cli(&dave, &["audit", "export"]).status.success());
    assert_eq!(s.json(&dave, &["audit", "verify"])["ok"], true);
});

/// Follows `Link: <…>; rel="next"` from `path` and returns each page's `field`s.
fn follow_pages(s: &Server, token: &str, path: &str, field: &str) -> Vec<Vec<String>> {
    let mut path = path.to_string();
    let mut pages = vec![];
    let agent = ureq::AgentBuilder::new().build();
    for _ in 0..20 {
        let resp = agent
            .get(&format!("{}{path}", s.addr))
            .set("Authorization", &format!("Bearer {token}"))
            .call()
            .unwrap();
        let link = resp.header("link").map(str::to_string);
        let page: serde_json::Value = serde_json::from_str(&resp.into_string().unwrap()).unwrap();
        pages.push(
            page.as_array()
                .unwrap()
                .iter()
                .map(|r| r[field].as_str().unwrap().to_string())
                .collect(),
        );
        match link {
            Some(l) => {
                path = l
                    .strip_prefix('<')
                    .and_then(|l| l.split_once(">; rel=\"next\""))
                    .map(|(p, _)| p.to_string())
                    .unwrap_or_else(|| panic!("bad Link header {l}"));
            }
            None => return pages,
        }
    }
    panic!("more than 20 pages from {path}")
}

#[test]
fn request_lists_page_by_cursor_in_the_link_header() {
    let s = Server::start(Setup::new(Db::Sqlite));
    let alice = s.token("alice");
    let made: Vec<String> = (0..5)
        .map(|_| id_of(&s.json(&alice, &["request", "two-person", "--for", "5m"])))
        .collect();
    let pages = follow_pages(&s, &alice, "/api/v1/requests?limit=2", "id");
    assert_eq!(pages.len(), 3, "2 + 2 + 1: {pages:?}");
    let mut want = made.clone();
    want.reverse();
    assert_eq!(pages.concat(), want, "every request once, newest first");
    let (status, _, v) = s.http(
        "GET",
        "/api/v1/requests?cursor=nonsense",
        Some(&alice),
        None,
    );
    assert_eq!(status, 400, "{v}");
}

#[test]
fn run_and_token_lists_page_by_cursor_too() {
    let tools = crate::proxy_kit::Tools::new();
    let s = tools.server(Db::Sqlite);
    let alice = s.token("alice");
    let runs: Vec<String> = (0..5)
        .map(|i| {
            id_of(&crate::proxy_kit::cli_json(
                &s,
                &alice,
                &["exec", "--", "argv", "get", &format!("p{i}")],
            ))
        })
        .collect();
    let pages = follow_pages(&s, &alice, "/api/v1/runs?mine=true&limit=2", "id");
    assert_eq!(pages.len(), 3, "2 + 2 + 1: {pages:?}");
    let mut want = runs.clone();
    want.reverse();
    assert_eq!(pages.concat(), want, "every run once, newest first");
    let (status, _, v) = s.http("GET", "/api/v1/runs?cursor=1-nope", Some(&alice), None);
    assert_eq!(status, 400, "{v}");

    // Tokens: alice's one, plus four more; pages of two, and the CLI follows them all.
    for _ in 0..4 {
        s.token("alice");
    }
    let pages = follow_pages(&s, &s.admin, "/api/v1/tokens?user=alice&limit=2", "prefix");
    assert_eq!(pages.len(), 3, "5 tokens in pages of 2: {pages:?}");
    let mut all = pages.concat();
    all.sort();
    all.dedup();
    assert_eq!(all.len(), 5, "no token twice: {pages:?}");
    let listed = s.json(&s.admin, &["token", "list", "--user", "alice"]);
    assert_eq!(listed.as_array().unwrap().len(), 5, "{listed}");
    let (status, _, v) = s.http("GET", "/api/v1/tokens?cursor=5-zz", Some(&s.admin), None);
    assert_eq!(status, 400, "{v}");
}
