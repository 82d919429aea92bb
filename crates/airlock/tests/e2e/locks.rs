//! Locks and token administration: the kill switch ends live access within a
//! second, refuses the user's tokens and sessions, and survives restarts;
//! admins list and revoke tokens without ever seeing a secret.

use std::time::{Duration, Instant};

use crate::both_stores;
use crate::kit::*;

fn request(s: &Server, token: &str, ent: &str) -> String {
    id_of(&s.json(
        token,
        &["request", ent, "--for", "30m", "--reason", "INC-9"],
    ))
}

both_stores!(
    a_user_lock_ends_a_live_postgres_grant_within_a_second_and_refuses_their_token,
    |db| {
        let mut s = Server::start(Setup::new(db));
        let (alice, bob) = (s.token("alice"), s.token("bob"));
        let id = s.active_grant(&alice, &bob, "30m", "INC-7");
        let creds = s.json(&alice, &["credentials", &id]);
        let (user, pw, database) = (
            creds["username"].as_str().unwrap().to_string(),
            creds["password"].as_str().unwrap().to_string(),
            creds["database"].as_str().unwrap().to_string(),
        );
        login(&user, &pw, &database).expect("login works before the lock");
        let pending = request(&s, &alice, "two-person");

        // Only admins lock.
        let refused = s.cli(&bob, &["lock", "user", "alice", "--reason", "INC-8"]);
        assert_eq!(refused.status.code(), Some(1), "{}", stderr(&refused));
        assert!(
            stderr(&refused).contains("only admins"),
            "{}",
            stderr(&refused)
        );

        let started = Instant::now();
        let v = s.json(
            &s.admin,
            &["lock", "user", "Alice", "--reason", "INC-8: laptop stolen"],
        );
        assert_eq!(
            (v["kind"].as_str(), v["name"].as_str()),
            (Some("user"), Some("alice"))
        );
        assert_eq!(v["enforced"]["revoked"], serde_json::json!([id]));
        assert_eq!(v["enforced"]["withdrawn"], serde_json::json!([pending]));
        // Role gone and login refused within a second of the lock.
        while role_exists(&user) {
            assert!(
                started.elapsed() < Duration::from_secs(1),
                "role still exists {:?} after the lock\n{}",
                started.elapsed(),
                s.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(
            login(&user, &pw, &database).is_err(),
            "login must fail after the lock"
        );

        // Her token is refused, with the reason, and new requests are impossible.
        let out = s.cli(&alice, &["whoami"]);
        assert_eq!(out.status.code(), Some(1));
        assert!(
            stderr(&out).contains("locked: INC-8: laptop stolen"),
            "{}",
            stderr(&out)
        );
        let r = s.json(&bob, &["show", &id]);
        assert_eq!(r["state"], "revoked");
        assert_eq!(s.json(&bob, &["show", &pending])["state"], "withdrawn");
        let kinds = s.audit_kinds("user:alice");
        assert!(kinds.contains(&"lock.created".to_string()), "{kinds:?}");

        // The lock survives a restart.
        s.kill9();
        s.boot();
        let out = s.cli(&alice, &["whoami"]);
        assert!(stderr(&out).contains("locked:"), "{}", stderr(&out));
        let locks = s.json(&s.admin, &["lock", "list"]);
        assert_eq!(locks.as_array().unwrap().len(), 1, "{locks}");

        s.json(&s.admin, &["unlock", "user", "alice"]);
        s.json(&alice, &["whoami"]);
        assert!(s
            .audit_kinds("user:alice")
            .contains(&"lock.removed".to_string()));
        let again = s.cli(&s.admin, &["unlock", "user", "alice"]);
        assert_eq!(again.status.code(), Some(1), "nothing left to unlock");
    }
);

both_stores!(
    an_entitlement_lock_revokes_its_grants_and_refuses_new_requests,
    |db| {
        let s = Server::start(Setup::new(db));
        let (alice, bob) = (s.token("alice"), s.token("bob"));
        let id = s.active_grant(&alice, &bob, "30m", "INC-1");
        let v = s.json(
            &s.admin,
            &[
                "lock",
                "entitlement",
                "payments-db-write",
                "--reason",
                "INC-2: data leak",
                "--for",
                "1h",
            ],
        );
        assert_eq!(v["enforced"]["revoked"], serde_json::json!([id]));
        assert!(v["expires_at"].is_string());
        let out = s.cli(
            &alice,
            &[
                "request",
                "payments-db-write",
                "--for",
                "5m",
                "--reason",
                "INC-3",
            ],
        );
        assert_eq!(out.status.code(), Some(1));
        assert!(
            stderr(&out).contains("locked: INC-2: data leak"),
            "{}",
            stderr(&out)
        );
        // Other entitlements are untouched.
        request(&s, &alice, "two-person");
        let unknown = s.cli(
            &s.admin,
            &["lock", "entitlement", "no-such", "--reason", "x"],
        );
        assert_eq!(unknown.status.code(), Some(1));
        let no_reason = s.cli(&s.admin, &["lock", "user", "bob", "--reason", " "]);
        assert!(
            stderr(&no_reason).contains("a lock needs a reason"),
            "{}",
            stderr(&no_reason)
        );
    }
);

both_stores!(
    admins_list_and_revoke_tokens_and_revoking_ends_sessions_made_from_them,
    |db| {
        let s = Server::start(Setup::new(db));
        let alice = s.token("alice");
        let alice2 = s.token("alice");
        let bob = s.token("bob");
        s.json(&alice, &["whoami"]);
        // Last use is written in the background: give it a moment.
        let deadline = Instant::now() + Duration::from_secs(5);
        let list = loop {
            let v = s.json(&s.admin, &["token", "list", "--user", "alice"]);
            let list = v.as_array().unwrap().clone();
            if list.iter().any(|t| t["last_used_at"].is_string()) || Instant::now() > deadline {
                break list;
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        assert_eq!(list.len(), 2, "{list:?}");
        for t in &list {
            assert_eq!(t["prefix"].as_str().unwrap().len(), 8);
            assert!(
                t.get("token").is_none() && t.get("hash").is_none(),
                "no secret: {t}"
            );
        }
        assert_eq!(
            list.iter()
                .filter(|t| t["last_used_at"].is_string())
                .count(),
            1,
            "only the token that called whoami shows a last use: {list:?}"
        );
        let refused = s.cli(&bob, &["token", "list"]);
        assert_eq!(refused.status.code(), Some(1));

        // A web session started from alice's token ends with it.
        let session = web_session_from(&s, &alice);
        let (status, _, _) = s.http("GET", "/api/v1/whoami", Some(&session), None);
        assert_eq!(status, 200);
        let prefix = hex::encode(&sha2_of(&alice)[..4]);
        let v = s.json(&s.admin, &["token", "revoke", &prefix]);
        assert_eq!(v["revoked"].as_array().unwrap().len(), 1, "{v}");
        for t in [&alice, &session] {
            let (status, _, _) = s.http("GET", "/api/v1/whoami", Some(t), None);
            assert_eq!(status, 401, "revoked token or its session still works");
        }
        s.json(&alice2, &["whoami"]);
        let short = s.cli(&s.admin, &["token", "revoke", "abc"]);
        assert!(
            stderr(&short).contains("at least 8 hex digits"),
            "{}",
            stderr(&short)
        );
        // All of a user's tokens at once.
        let v = s.json(&s.admin, &["token", "revoke", "--user", "alice"]);
        assert_eq!(v["revoked"].as_array().unwrap().len(), 1);
        assert_eq!(s.cli(&alice2, &["whoami"]).status.code(), Some(1));
        s.json(&bob, &["whoami"]);
    }
);

fn sha2_of(token: &str) -> Vec<u8> {
    use sha2::Digest;
    sha2::Sha256::digest(token.as_bytes()).to_vec()
}

/// Signs in on the web UI with an API token and returns the session cookie's token.
fn web_session_from(s: &Server, token: &str) -> String {
    let agent = ureq::AgentBuilder::new().redirects(0).build();
    let page = agent.get(&format!("{}/ui/signin", s.addr)).call().unwrap();
    let cookie = page
        .all("set-cookie")
        .into_iter()
        .find_map(|c| {
            c.split(';')
                .next()
                .filter(|kv| kv.starts_with("airlock_signin="))
                .map(str::to_string)
        })
        .expect("signin cookie");
    let csrf = cookie.trim_start_matches("airlock_signin=").to_string();
    let resp = agent
        .post(&format!("{}/ui/signin/token", s.addr))
        .set("Cookie", &cookie)
        .send_form(&[("csrf", csrf.as_str()), ("token", token)]);
    let resp = match resp {
        Ok(r) | Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("{e}"),
    };
    assert_eq!(
        resp.status(),
        303,
        "{}",
        resp.into_string().unwrap_or_default()
    );
    resp.all("set-cookie")
        .into_iter()
        .find_map(|c| {
            c.split(';')
                .next()
                .and_then(|kv| kv.strip_prefix("airlock_session="))
                .map(str::to_string)
        })
        .expect("session cookie")
}
