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

#[test]
fn request_lists_page_by_cursor_in_the_link_header() {
    let s = Server::start(Setup::new(Db::Sqlite));
    let alice = s.token("alice");
    let made: Vec<String> = (0..5)
        .map(|_| id_of(&s.json(&alice, &["request", "two-person", "--for", "5m"])))
        .collect();
    let mut path = "/api/v1/requests?limit=2".to_string();
    let mut seen = vec![];
    let agent = ureq::AgentBuilder::new().build();
    for _ in 0..10 {
        let resp = agent
            .get(&format!("{}{path}", s.addr))
            .set("Authorization", &format!("Bearer {alice}"))
            .call()
            .unwrap();
        let link = resp.header("link").map(str::to_string);
        let page: serde_json::Value = serde_json::from_str(&resp.into_string().unwrap()).unwrap();
        seen.extend(ids(&page));
        match link {
            Some(l) => {
                path = l
                    .strip_prefix('<')
                    .and_then(|l| l.split_once(">; rel=\"next\""))
                    .map(|(p, _)| p.to_string())
                    .unwrap_or_else(|| panic!("bad Link header {l}"));
            }
            None => break,
        }
    }
    let mut want = made.clone();
    want.reverse();
    assert_eq!(seen, want, "every request once, newest first");
    let (status, _, v) = s.http(
        "GET",
        "/api/v1/requests?cursor=nonsense",
        Some(&alice),
        None,
    );
    assert_eq!(status, 400, "{v}");
}
