//! SSH certificates through the real binary and CLI, logging in to a real
//! sshd: works while active, refused after revoke once the KRL is in place,
//! and refused after `not_after` even with the airlock server stopped.

use std::time::{Duration, Instant};

use crate::kit::*;

#[path = "../../../airlock-providers/tests/support/sshd.rs"]
pub(crate) mod sshd;

const SSH_CATALOG: &str = r#"
[providers.ssh-prod]
kind = "ssh"
ca_key = "ssh_ca"

[[entitlement]]
name = "web-deploy"
provider = "ssh-prod"
principals = ["deploy"]
max_duration = "1h"
approvals = { count = 1, reviewers = ["payments-eng"] }
"#;

fn grant(s: &Server, alice: &str, bob: &str, duration: &str) -> String {
    let r = s.json(
        alice,
        &[
            "request",
            "web-deploy",
            "--for",
            duration,
            "--reason",
            "CHG-1 deploy",
        ],
    );
    let id = id_of(&r);
    s.json(bob, &["review", &id, "--approve"]);
    s.wait_for(alice, &id, 10, |r| r["state"] == "active");
    id
}

/// `airlock credentials ID --public-key FILE > cert` as a user would run it.
fn certificate(
    s: &Server,
    token: &str,
    id: &str,
    key: &sshd::UserKey,
    label: &str,
) -> std::path::PathBuf {
    let pubfile = key.private.with_extension("pub");
    let out = s.cli(
        token,
        &[
            "--output",
            "text",
            "credentials",
            id,
            "--public-key",
            pubfile.to_str().unwrap(),
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let line = String::from_utf8(out.stdout).unwrap();
    assert_eq!(
        line.lines().count(),
        1,
        "text output is the certificate line only: {line}"
    );
    assert!(
        line.starts_with("ssh-ed25519-cert-v01@openssh.com "),
        "{line}"
    );
    key.write_cert(label, &line).unwrap()
}

#[test]
fn certificate_login_works_until_revoked_or_expired_even_with_the_server_down() {
    let mut setup = Setup::new(Db::Sqlite);
    setup.extra = SSH_CATALOG.into();
    let mut s = Server::start(setup);
    let (alice, bob) = (s.token("alice"), s.token("bob"));

    let ca = s.cli(&s.admin, &["--output", "text", "ssh", "ca-key", "ssh-prod"]);
    assert!(ca.status.success(), "{}", stderr(&ca));
    let ca = String::from_utf8(ca.stdout).unwrap();
    assert!(ca.starts_with("ssh-ed25519 "), "{ca}");
    let sshd = sshd::Sshd::start(ca.trim(), &["deploy"]).unwrap();
    let dir = sshd::TempDir::new("e2e-ssh-keys").unwrap();
    let key = sshd::UserKey::generate(dir.path(), "alice", "ed25519").unwrap();

    // Grant 1 ends by itself; grant 2 is revoked early.
    let short = grant(&s, &alice, &bob, "20s");
    let long = grant(&s, &alice, &bob, "10m");

    let no_key = s.cli(&alice, &["credentials", &short]);
    assert_eq!(no_key.status.code(), Some(1));
    assert!(
        stderr(&no_key).contains("--public-key"),
        "{}",
        stderr(&no_key)
    );
    let not_mine = s.cli(
        &bob,
        &[
            "credentials",
            &short,
            "--public-key",
            key.private.with_extension("pub").to_str().unwrap(),
        ],
    );
    assert_eq!(
        not_mine.status.code(),
        Some(1),
        "only the requester is certified"
    );

    let cert_short = certificate(&s, &alice, &short, &key, "short");
    let cert_long = certificate(&s, &alice, &long, &key, "long");
    let json = s.json(
        &alice,
        &[
            "credentials",
            &long,
            "--public-key",
            key.private.with_extension("pub").to_str().unwrap(),
        ],
    );
    assert_eq!(json["principals"], serde_json::json!(["deploy"]));
    assert!(json["serial"].as_u64().unwrap() >= 1);
    assert_eq!(
        json["key_id"],
        format!("airlock:alice:{long}"),
        "key id names the user and the request"
    );
    let shown = s.json(&alice, &["show", &long]);
    let valid_before = time::OffsetDateTime::parse(
        json["valid_before"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    let not_after = time::OffsetDateTime::parse(
        shown["not_after"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    assert!(
        valid_before <= not_after && not_after - valid_before < time::Duration::seconds(1),
        "certificate ends at not_after: {valid_before} vs {not_after}"
    );
    sshd.login(&key.private, &cert_short)
        .expect("login with grant 1");
    sshd.login(&key.private, &cert_long)
        .expect("login with grant 2");
    let kinds = s.audit_kinds(&format!("request:{long}"));
    assert_eq!(
        kinds.iter().filter(|k| *k == "credential.issued").count(),
        2,
        "{kinds:?}"
    );

    // Revoke grant 2: its certificates go into the KRL, grant 1's do not.
    s.json(&alice, &["revoke", &long]);
    let krl = s.cli(&s.admin, &["ssh", "krl", "ssh-prod"]);
    assert!(krl.status.success(), "{}", stderr(&krl));
    assert!(krl.stdout.starts_with(b"SSHKRL\n\0"), "OpenSSH KRL magic");
    sshd.set_krl(&krl.stdout).unwrap();
    let refused = sshd.login(&key.private, &cert_long);
    assert!(refused.is_err(), "revoked certificate still logs in");
    sshd.login(&key.private, &cert_short)
        .expect("grant 1 unaffected by the KRL");
    // The KRL is public: hosts fetch it without a token.
    let (status, ctype, _) = s.http("GET", "/api/v1/providers/ssh-prod/ssh/krl", None, None);
    assert_eq!((status, ctype.as_str()), (200, "application/octet-stream"));

    // Native expiry: with airlock down, the certificate still ends at not_after.
    let not_after = time::OffsetDateTime::parse(
        s.json(&alice, &["show", &short])["not_after"]
            .as_str()
            .unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    s.kill9();
    let wait = not_after - time::OffsetDateTime::now_utc() + time::Duration::seconds(1);
    if wait.is_positive() {
        std::thread::sleep(Duration::from_secs_f64(wait.as_seconds_f64()));
    }
    let t = Instant::now();
    let err = sshd
        .login(&key.private, &cert_short)
        .expect_err("expired certificate logs in");
    assert!(t.elapsed() < Duration::from_secs(30), "{err}");
}
