//! The command provider against real programs: a small shell script that keeps
//! grants in a state file (standing in for an operator's integration script).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use airlock_core::{EntitlementName, ProviderName, RequestId, Span, UserName};
use airlock_providers::command::CommandProvider;
use airlock_providers::command::{Config, Target};
use airlock_providers::EntitlementTarget;
use airlock_providers::{GrantSpec, Provider, ProviderError};
use time::macros::datetime;

/// A grant/revoke/list program: `grant ID PRINCIPAL ROLE NOT_AFTER` appends a
/// line, `revoke ID` removes it (absent = ok), `list` prints JSON lines. It
/// also records its exact argv, one element per line, NUL-separated calls.
const SCRIPT: &str = r#"#!/bin/sh
state="$(dirname "$0")/state"
printf '%s\n' "$@" >> "$(dirname "$0")/argv"
printf '\0\n' >> "$(dirname "$0")/argv"
touch "$state"
case "$1" in
  grant)
    [ "$4" = "missing_role" ] && { echo "role $4 does not exist" >&2; exit 3; }
    [ "$4" = "flaky" ] && { echo "target busy" >&2; exit 75; }
    [ "$4" = "slow" ] && { sleep 30 & echo $! > "$(dirname "$0")/bgpid"; sleep 30; }
    grep -q "^$2 " "$state" || echo "$2 $3 $4 $5" >> "$state" ;;
  revoke)
    grep -v "^$2 " "$state" > "$state.tmp"; mv "$state.tmp" "$state" ;;
  list)
    while read -r id who role until; do
      printf '{"account": "%s", "request_id": "%s"}\n' "$id" "$id"
    done < "$state" ;;
esac
"#;

struct Fixture {
    dir: PathBuf,
    provider: CommandProvider,
}

fn fixture(timeout_secs: u64) -> Fixture {
    let dir = std::env::temp_dir().join(format!(
        "airlock-cmd-{}-{}",
        std::process::id(),
        Instant::now().elapsed().as_nanos() ^ rand_u64()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let prog = dir.join("grants.sh");
    std::fs::write(&prog, SCRIPT).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&prog, std::fs::Permissions::from_mode(0o755)).unwrap();
    let p = prog.display().to_string();
    let config = Config {
        grant: vec![
            p.clone(),
            "grant".into(),
            "{request_id}".into(),
            "{principal}".into(),
            "{role}".into(),
            "until={not_after}".into(),
        ],
        revoke: vec![p.clone(), "revoke".into(), "{account}".into()],
        list: Some(vec![p, "list".into()]),
        timeout: Some(Span::from_secs(timeout_secs).unwrap()),
    };
    let provider =
        CommandProvider::new(ProviderName::parse("cmd").unwrap(), &config, &dir).unwrap();
    Fixture { dir, provider }
}

fn rand_u64() -> u128 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u8(0);
    h.finish() as u128
}

fn grant(id: &str, role: &str) -> GrantSpec {
    GrantSpec {
        request_id: RequestId::parse(id).unwrap(),
        requester: UserName::parse("alice").unwrap(),
        email: None,
        entitlement: EntitlementName::parse("legacy-admin").unwrap(),
        target: EntitlementTarget::Command(Target {
            role: Some(role.into()),
        }),
        not_after: datetime!(2030-01-02 03:04:05.678 UTC),
        secret: [0; 32],
    }
}

fn state(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("state")).unwrap_or_default()
}

fn calls(dir: &Path) -> Vec<Vec<String>> {
    let text = std::fs::read_to_string(dir.join("argv")).unwrap_or_default();
    text.split("\0\n")
        .filter(|c| !c.is_empty())
        .map(|c| c.lines().map(String::from).collect())
        .collect()
}

#[tokio::test]
async fn grant_list_revoke_round_trip_with_exact_argv() {
    let f = fixture(10);
    f.provider.check().await.unwrap();
    let g = grant("req00000001", "admin");
    f.provider.apply(&g).await.unwrap();
    f.provider.apply(&g).await.unwrap();
    assert_eq!(
        state(&f.dir).lines().collect::<Vec<_>>(),
        ["req00000001 alice admin until=2030-01-02T03:04:05Z"]
    );
    assert_eq!(
        calls(&f.dir)[0],
        [
            "grant",
            "req00000001",
            "alice",
            "admin",
            "until=2030-01-02T03:04:05Z"
        ]
    );
    let listed = f.provider.list_managed().await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].account, "req00000001");
    assert_eq!(
        listed[0].request_id.as_ref().map(|r| r.to_string()),
        Some("req00000001".into())
    );
    f.provider.remove(&g).await.unwrap();
    f.provider.remove(&g).await.unwrap();
    assert_eq!(state(&f.dir), "");
    assert!(f.provider.list_managed().await.unwrap().is_empty());
}

#[tokio::test]
async fn a_hostile_role_stays_one_argument_and_runs_no_shell() {
    let f = fixture(10);
    let hostile = "x y; touch pwned $(touch pwned2) `touch pwned3`";
    // Roles are validated by the config parser; the provider must be inert anyway.
    let g = grant("req00000002", hostile);
    f.provider.apply(&g).await.unwrap();
    let call = &calls(&f.dir)[0];
    assert_eq!(call.len(), 5, "{call:?}");
    assert_eq!(call[3], hostile);
    for file in ["pwned", "pwned2", "pwned3"] {
        assert!(!f.dir.join(file).exists(), "{file} was created");
    }
}

#[tokio::test]
async fn failures_carry_stderr_and_are_classified() {
    let f = fixture(10);
    let err = f
        .provider
        .apply(&grant("req00000003", "missing_role"))
        .await
        .unwrap_err();
    assert!(matches!(err, ProviderError::Refused { .. }), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("exit code 3") && msg.contains("role missing_role does not exist"),
        "{msg}"
    );
    let err = f
        .provider
        .apply(&grant("req00000004", "flaky"))
        .await
        .unwrap_err();
    assert!(err.is_retryable(), "{err}");
    assert!(err.to_string().contains("target busy"), "{err}");
}

#[tokio::test]
async fn a_program_past_its_timeout_is_killed_with_its_children() {
    let f = fixture(1);
    let t = Instant::now();
    let err = f
        .provider
        .apply(&grant("req00000005", "slow"))
        .await
        .unwrap_err();
    assert!(err.is_retryable(), "{err}");
    assert!(
        err.to_string().contains("did not finish within 1s"),
        "{err}"
    );
    assert!(t.elapsed() < Duration::from_secs(20));
    // The backgrounded `sleep 30` belonged to the same process group.
    let pid = std::fs::read_to_string(f.dir.join("bgpid")).unwrap();
    let pid = pid.trim();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        // Gone, or a zombie waiting for its (new) parent to reap it.
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let state = stat
            .rsplit(')')
            .next()
            .unwrap_or("")
            .split_whitespace()
            .next();
        if stat.is_empty() || state == Some("Z") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "grandchild {pid} survived: {stat}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test]
async fn bad_list_output_is_refused_with_its_line_number() {
    let f = fixture(10);
    std::fs::write(f.dir.join("state"), "").unwrap();
    let prog = f.dir.join("bad-list.sh");
    std::fs::write(
        &prog,
        "#!/bin/sh\necho '{\"account\": \"a\"}'\necho 'not json'\n",
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&prog, std::fs::Permissions::from_mode(0o755)).unwrap();
    let config = Config {
        grant: vec!["/bin/true".into()],
        revoke: vec!["/bin/true".into()],
        list: Some(vec![prog.display().to_string()]),
        ..Default::default()
    };
    let p = CommandProvider::new(ProviderName::parse("cmd").unwrap(), &config, &f.dir).unwrap();
    let err = p.list_managed().await.unwrap_err().to_string();
    assert!(err.contains("line 2"), "{err}");
}

#[tokio::test]
async fn a_missing_program_fails_check_and_apply_clearly() {
    let config = Config {
        grant: vec!["/nonexistent/grant".into()],
        revoke: vec!["/bin/true".into()],
        ..Default::default()
    };
    let p =
        CommandProvider::new(ProviderName::parse("cmd").unwrap(), &config, Path::new("/")).unwrap();
    let err = p.check().await.unwrap_err().to_string();
    assert!(err.contains("/nonexistent/grant"), "{err}");
    let err = p
        .apply(&grant("req00000006", "r"))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("cannot start /nonexistent/grant"), "{err}");
}
