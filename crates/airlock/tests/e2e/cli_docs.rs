//! Completions and man pages from the real binary: bash loads the script and
//! completes a subcommand; `airlock man` writes a page per subcommand.

use std::process::Command;

use crate::kit::*;

#[test]
fn bash_loads_the_completion_script_and_completes_a_subcommand() {
    let script = format!(
        "set -e; source <('{BIN}' completions bash); complete -p airlock; \
         COMP_WORDS=(airlock brea); COMP_CWORD=1; COMP_LINE='airlock brea'; COMP_POINT=12; \
         _airlock airlock brea airlock; printf 'reply:%s\\n' \"${{COMPREPLY[@]}}\""
    );
    let out = Command::new("bash")
        .arg("-c")
        .arg(&script)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}{}", stderr(&out));
    assert!(text.contains("-F _airlock airlock"), "{text}");
    assert!(text.contains("reply:breakglass"), "{text}");
}

#[test]
fn man_writes_a_page_per_subcommand_and_says_what_it_wrote() {
    let dir = std::env::temp_dir().join(unique("airlock-man-"));
    let out = Command::new(BIN)
        .args(["man", "--output", "json"])
        .arg(&dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let pages: Vec<&str> = v["pages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap())
        .collect();
    for want in [
        "airlock.1",
        "airlock-request.1",
        "airlock-audit-verify.1",
        "airlock-lock.1",
    ] {
        assert!(pages.contains(&want), "{want} missing from {pages:?}");
        assert!(dir.join(want).is_file(), "{want} not written");
    }
    // Without a token or server: these commands need neither.
    let out = Command::new(BIN)
        .args(["completions", "zsh"])
        .env_remove("AIRLOCK_TOKEN")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("#compdef airlock"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn airlock_output_sets_the_default_output_format() {
    let dir = std::env::temp_dir().join(unique("airlock-man-"));
    let out = Command::new(BIN)
        .arg("man")
        .arg(&dir)
        .env("AIRLOCK_OUTPUT", "json")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v["pages"].is_array(), "{v}");
    let out = Command::new(BIN)
        .args(["man", "--output", "text"])
        .arg(&dir)
        .env("AIRLOCK_OUTPUT", "json")
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout).starts_with("wrote "),
        "the flag wins"
    );
    let out = Command::new(BIN)
        .arg("man")
        .arg(&dir)
        .env("AIRLOCK_OUTPUT", "yaml")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(stderr(&out).contains("yaml"), "{}", stderr(&out));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn airlock_alone_prints_a_short_guide_and_exits_0() {
    let out = Command::new(BIN)
        .env_remove("AIRLOCK_TOKEN")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    for cmd in [
        "airlock request",
        "airlock status",
        "airlock review",
        "airlock serve --dev",
    ] {
        assert!(text.contains(cmd), "{cmd} missing from the guide: {text}");
    }
    assert!(
        text.lines().count() < 20,
        "a guide, not the whole help: {text}"
    );
}

#[test]
fn status_shows_my_grants_with_time_left_and_what_waits_for_me() {
    let s = Server::start(Setup::new(Db::Sqlite));
    let (alice, bob) = (s.token("alice"), s.token("bob"));
    let active = s.active_grant(&alice, &bob, "1h", "INC-11");
    let pending = s.pending_request(&alice, "30m", "INC-12");
    let breakglass = id_of(&s.json(
        &bob,
        &[
            "breakglass",
            "payments-breakglass",
            "--for",
            "15m",
            "--reason",
            "INC-13 outage",
        ],
    ));
    let mine = s.json(&alice, &["status"]);
    let ids = |k: &str| -> Vec<String> {
        mine[k]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["id"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(ids("active"), std::slice::from_ref(&active));
    assert_eq!(
        ids("to_review"),
        Vec::<String>::new(),
        "never one's own requests"
    );
    assert_eq!(
        ids("post_reviews"),
        std::slice::from_ref(&breakglass),
        "{mine}"
    );
    let theirs = s.json(&bob, &["status"]);
    let to_review: Vec<&str> = theirs["to_review"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    assert_eq!(to_review, [pending.as_str()], "{theirs}");
    let text = s.cli(&alice, &["status"]);
    assert!(text.status.success(), "{}", stderr(&text));
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains(&active) && text.contains(" left "), "{text}");
}

#[test]
fn init_writes_a_starter_that_serve_starts_from_and_whose_policy_tests_pass() {
    use std::io::{BufRead, BufReader};
    for providers in ["postgres,ssh", "ssh"] {
        let dir = std::env::temp_dir().join(unique("airlock-init-"));
        let out = Command::new(BIN)
            .args(["init", "--provider", providers, "--output", "json"])
            .arg(&dir)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v["files"].as_array().unwrap().len(), 3, "{v}");
        let config = dir.join("airlock.toml");
        let cases = Command::new(BIN)
            .args(["policy", "test"])
            .arg(dir.join("policy-tests.toml"))
            .arg("--config")
            .arg(&config)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&cases.stdout);
        assert!(
            cases.status.success() && text.contains("3 passed, 0 failed"),
            "{text}{}",
            stderr(&cases)
        );
        // Starts without edits, whatever of its providers this machine can reach.
        let mut child = Command::new(BIN)
            .args(["serve", "--listen", "127.0.0.1:0", "--config"])
            .arg(&config)
            .env("AIRLOCK_BOOTSTRAP_TOKEN", "init-test-bootstrap-token")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let _ = child.kill();
        let _ = child.wait();
        assert!(
            line.starts_with("airlock listening on http://127.0.0.1:"),
            "{providers}: {line:?}"
        );
        let again = Command::new(BIN).arg("init").arg(&dir).output().unwrap();
        assert_eq!(again.status.code(), Some(1));
        assert!(
            stderr(&again).contains("never overwrites"),
            "{}",
            stderr(&again)
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
    let out = Command::new(BIN)
        .args(["init", "--provider", "postgres,mysqll"])
        .arg(std::env::temp_dir().join(unique("airlock-init-")))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("`mysqll`"), "{}", stderr(&out));
}
