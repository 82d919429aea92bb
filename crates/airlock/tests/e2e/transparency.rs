//! The audit log as a transparency log: deleting due checkpoints after a
//! rewrite is caught, a saved checkpoint proves the log only grew (and fails
//! against a replaced database and key), and inclusion proofs check out.

use sha2::{Digest, Sha256};

use crate::both_stores;
use crate::kit::*;

fn tokens(s: &Server, n: usize) {
    for i in 0..n {
        s.token(&format!("u{i}"));
    }
}

/// Waits until the latest signed checkpoint covers `size` events; returns it.
fn checkpoint_at(s: &Server, size: u64) -> String {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let out = s.cli(&s.admin, &["audit", "checkpoint"]);
        let note = String::from_utf8_lossy(&out.stdout).to_string();
        if out.status.success() && note.lines().nth(1) == Some(&size.to_string()) {
            return note;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no checkpoint of size {size}: {note} {}",
            stderr(&out)
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

fn events(s: &Server) -> Vec<(i64, Vec<u8>)> {
    match s.db {
        Db::Sqlite => {
            let c = rusqlite::Connection::open(s.path("airlock.db")).unwrap();
            let mut st = c
                .prepare("SELECT seq, body FROM audit_events ORDER BY seq")
                .unwrap();
            let rows = st
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
                .unwrap()
                .map(Result::unwrap)
                .collect();
            rows
        }
        Db::Postgres => {
            let mut c = pg();
            c.batch_execute(&format!(
                "SET search_path = {}",
                s.schema.as_deref().unwrap()
            ))
            .unwrap();
            c.query("SELECT seq, body FROM audit_events ORDER BY seq", &[])
                .unwrap()
                .iter()
                .map(|r| (r.get(0), r.get(1)))
                .collect()
        }
    }
}

fn blob(db: Db, b: &[u8]) -> String {
    match db {
        Db::Sqlite => format!("X'{}'", hex::encode(b)),
        Db::Postgres => format!("decode('{}', 'hex')", hex::encode(b)),
    }
}

fn verify(out: std::process::Output) -> (i32, serde_json::Value) {
    let v = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{e}: {} {}",
            String::from_utf8_lossy(&out.stdout),
            stderr(&out)
        )
    });
    (out.status.code().unwrap_or(-1), v)
}

both_stores!(a_rewritten_chain_with_its_checkpoints_deleted_fails, |db| {
    let mut s = Server::start(Setup::new(db));
    tokens(&s, 12);
    checkpoint_at(&s, 12);
    s.kill9();
    // The attacker edits event 3, recomputes every chain hash and the head
    // row, and deletes the checkpoints that would give the rewrite away.
    let mut prev = [0u8; 32];
    let mut sql = String::new();
    for (seq, mut body) in events(&s) {
        if seq == 3 {
            let text = String::from_utf8(body)
                .unwrap()
                .replace("user:u2", "user:mx");
            assert!(text.contains("mx"), "{text}");
            body = text.into_bytes();
        }
        let mut h = Sha256::new();
        h.update(prev);
        h.update(&body);
        prev = h.finalize().into();
        sql += &format!(
            "UPDATE audit_events SET body = {}, hash = {} WHERE seq = {seq};\n",
            blob(db, &body),
            blob(db, &prev)
        );
    }
    sql += &format!(
        "UPDATE audit_head SET hash = {}, frontier = NULL; DELETE FROM audit_checkpoints WHERE seq >= 3;",
        blob(db, &prev)
    );
    s.store_sql(&sql);
    let (code, v) = verify(s.offline(&["audit", "verify", "--output", "json"]));
    assert_eq!(code, 1, "{v}");
    assert_eq!(v["first_bad_seq"], 5, "{v}");
    assert!(
        v["problem"]
            .as_str()
            .unwrap()
            .contains("checkpoint 5 is missing"),
        "{v}"
    );
});

both_stores!(saved_checkpoints_prove_the_log_only_grew, |db| {
    let s1 = Server::start(Setup::new(db));
    tokens(&s1, 6);
    let cp = s1.path("cp.txt");
    std::fs::write(&cp, checkpoint_at(&s1, 6)).unwrap();
    let cp = cp.to_str().unwrap().to_string();
    let vk1 = s1.json(&s1.admin, &["audit", "pubkey"])["verifier_key"]
        .as_str()
        .unwrap()
        .to_string();

    // An honest extension passes, online and offline, with and without a pinned key.
    tokens(&s1, 3);
    checkpoint_at(&s1, 9);
    let v = s1.json(&s1.admin, &["audit", "verify", "--since", &cp]);
    assert_eq!(
        (v["ok"].as_bool(), v["since"]["ok"].as_bool()),
        (Some(true), Some(true)),
        "{v}"
    );
    assert_eq!(
        (v["since"]["from"].as_u64(), v["since"]["to"].as_u64()),
        (Some(6), Some(9))
    );
    s1.json(
        &s1.admin,
        &["audit", "verify", "--since", &cp, "--key", &vk1],
    );
    let (code, v) = verify(s1.offline(&["audit", "verify", "--since", &cp, "--output", "json"]));
    assert_eq!(code, 0, "{v}");

    // Inclusion proofs verify; a tampered one does not.
    let p = s1.json(&s1.admin, &["audit", "prove", "3"]);
    assert_eq!(p["ok"], true, "{p}");
    let mut bad = p.clone();
    let first = bad["proof"][0].as_str().unwrap().to_string();
    let flipped = if first.starts_with('A') { "B" } else { "A" }.to_string() + &first[1..];
    bad["proof"][0] = serde_json::json!(flipped);
    let f = s1.path("proof.json");
    std::fs::write(&f, bad.to_string()).unwrap();
    let out = s1.cli(
        &s1.admin,
        &["audit", "prove", "3", "--proof", f.to_str().unwrap()],
    );
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("proof FAILED"));

    // A different database and a different key: the saved checkpoint no longer verifies.
    let s2 = Server::start(Setup::new(db));
    tokens(&s2, 12);
    checkpoint_at(&s2, 12);
    let out = s2.cli(
        &s2.admin,
        &["audit", "verify", "--since", &cp, "--output", "json"],
    );
    let (code, v) = verify(out);
    assert_eq!(code, 1, "{v}");
    assert!(
        v["since"]["problem"]
            .as_str()
            .unwrap()
            .contains("signing key was replaced"),
        "{v}"
    );
    let (code, v) = verify(s2.offline(&["audit", "verify", "--since", &cp, "--output", "json"]));
    assert_eq!(code, 1, "{v}");
    assert!(
        v["since"]["problem"]
            .as_str()
            .unwrap()
            .contains("signing key was replaced"),
        "{v}"
    );
    let out = s2.cli(
        &s2.admin,
        &[
            "audit", "verify", "--since", &cp, "--key", &vk1, "--output", "json",
        ],
    );
    let (code, v) = verify(out);
    assert_eq!(code, 1, "{v}");
    assert!(
        v["since"]["problem"]
            .as_str()
            .unwrap()
            .contains("latest checkpoint does not verify with the pinned key"),
        "{v}"
    );

    // Same key, different history (someone holding the database and the key).
    let key = std::fs::read_to_string(s1.path("audit-signing.key")).unwrap();
    let public = std::fs::read_to_string(s1.path("audit-signing.pub")).unwrap();
    let s3 = Server::start_with_files(
        Setup::new(db),
        &[("audit-signing.key", &key), ("audit-signing.pub", &public)],
    );
    tokens(&s3, 12);
    checkpoint_at(&s3, 12);
    for (code, v) in [
        verify(s3.cli(
            &s3.admin,
            &[
                "audit", "verify", "--since", &cp, "--key", &vk1, "--output", "json",
            ],
        )),
        verify(s3.offline(&["audit", "verify", "--since", &cp, "--output", "json"])),
    ] {
        assert_eq!(code, 1, "{v}");
        assert!(
            v["since"]["problem"]
                .as_str()
                .unwrap()
                .contains("not an append-only extension"),
            "{v}"
        );
    }
});
