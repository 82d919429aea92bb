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
