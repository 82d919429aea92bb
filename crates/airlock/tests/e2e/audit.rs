//! Tamper evidence: edits, deletions, reordering and truncation made directly
//! in the database are found by `audit verify --offline`, which names the
//! first bad sequence number.

use crate::both_stores;
use crate::kit::*;

fn twelve_events(s: &Server) {
    for user in [
        "u1", "u2", "carol", "u4", "u5", "u6", "u7", "u8", "u9", "u10", "u11", "u12",
    ] {
        s.token(user);
    }
}

fn verify_offline(s: &Server) -> (i32, serde_json::Value) {
    let out = s.offline(&["audit", "verify", "--output", "json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{e}: {} {}",
            String::from_utf8_lossy(&out.stdout),
            stderr(&out)
        )
    });
    (out.status.code().unwrap_or(-1), v)
}

fn tampered(db: Db, sql: &dyn Fn(&Server) -> String) -> serde_json::Value {
    let mut s = Server::start(Setup::new(db));
    twelve_events(&s);
    s.kill9();
    let (code, v) = verify_offline(&s);
    assert_eq!(
        (code, v["ok"].as_bool()),
        (0, Some(true)),
        "intact chain: {v}"
    );
    assert_eq!(v["events"], 12);
    assert_eq!(v["checkpoints_verified"], 2, "checkpoint_every = 5: {v}");
    s.store_sql(&sql(&s));
    let (code, v) = verify_offline(&s);
    assert_eq!(code, 1, "tampering must fail verification: {v}");
    assert_eq!(v["ok"], false);
    v
}

both_stores!(an_edited_event_is_named, |db| {
    let v = tampered(db, &|s| {
        match s.db {
        Db::Sqlite => "UPDATE audit_events SET body = CAST(replace(CAST(body AS TEXT), 'carol', 'mallo') AS BLOB) WHERE seq = 3".into(),
        Db::Postgres => "UPDATE audit_events SET body = convert_to(replace(convert_from(body, 'UTF8'), 'carol', 'mallo'), 'UTF8') WHERE seq = 3".into(),
    }
    });
    assert_eq!(v["first_bad_seq"], 3, "{v}");
});

both_stores!(a_deleted_event_is_named, |db| {
    let v = tampered(db, &|_| "DELETE FROM audit_events WHERE seq = 4".into());
    assert_eq!(v["first_bad_seq"], 4, "{v}");
});

both_stores!(reordered_events_are_named, |db| {
    let v = tampered(db, &|_| {
        "UPDATE audit_events SET seq = -1 WHERE seq = 2; UPDATE audit_events SET seq = 2 WHERE seq = 3; UPDATE audit_events SET seq = 3 WHERE seq = -1".into()
    });
    assert_eq!(v["first_bad_seq"], 2, "{v}");
});

both_stores!(truncation_is_caught_by_the_signed_checkpoint, |db| {
    // The attacker also rewinds the head row; the signed checkpoint at 10 remains.
    let v = tampered(db, &|_| {
        "DELETE FROM audit_events WHERE seq > 6; UPDATE audit_head SET seq = 6".into()
    });
    assert_eq!(v["first_bad_seq"], 7, "{v}");
});

#[test]
fn online_verify_and_export_agree_with_the_store() {
    let s = Server::start(Setup::new(Db::Sqlite));
    twelve_events(&s);
    let v = s.json(&s.admin, &["audit", "verify"]);
    assert_eq!(
        (v["ok"].as_bool(), v["events"].as_u64()),
        (Some(true), Some(12))
    );
    let out = s.cli(&s.admin, &["audit", "export", "--since", "10"]);
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(
        lines
            .iter()
            .map(|e| e["seq"].as_u64().unwrap())
            .collect::<Vec<_>>(),
        [11, 12]
    );
    for key in ["seq", "kind", "at", "actor", "subject", "data", "hash"] {
        assert!(lines[0].get(key).is_some(), "missing {key}");
    }
    let online = s.json(&s.admin, &["audit", "pubkey"]);
    let offline = s.offline(&["audit", "pubkey"]);
    // First line: the hex key as before; second line: the note verifier key.
    let text = String::from_utf8_lossy(&offline.stdout).to_string();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0].trim(), online["public_key"].as_str().unwrap());
    assert_eq!(lines[1].trim(), online["verifier_key"].as_str().unwrap());
}

both_stores!(
    online_verify_resumes_where_it_stopped_but_notices_a_rewritten_tail,
    |db| {
        let s = Server::start(Setup::new(db));
        twelve_events(&s);
        let v = s.json(&s.admin, &["audit", "verify"]);
        assert_eq!(v["ok"], true, "{v}");
        let verified = v["events"].as_u64().unwrap();
        // More events: the next call feeds only these, and reports the same totals a full pass would.
        s.token("late1");
        s.token("late2");
        let v = s.json(&s.admin, &["audit", "verify"]);
        assert_eq!(v["ok"], true, "{v}");
        assert_eq!(v["events"].as_u64().unwrap(), verified + 2);
        // Truncate behind the server's back: the kept prefix no longer matches
        // the store, so the whole log is checked again and the signed checkpoint
        // at 10 names the loss.
        s.store_sql("DELETE FROM audit_events WHERE seq > 6; UPDATE audit_head SET seq = 6");
        let out = s.cli(&s.admin, &["audit", "verify", "--output", "json"]);
        assert_eq!(
            out.status.code(),
            Some(1),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v["first_bad_seq"], 7, "{v}");
    }
);
