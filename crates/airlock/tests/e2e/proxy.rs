//! The tool proxy end to end: the real binary runs real programs (scripts,
//! psql) through `airlock exec` and `airlock operation run`.

use std::time::Duration;

use serde_json::json;

use crate::both_stores;
use crate::kit::*;
use crate::proxy_kit::*;

both_stores!(
    allowed_exec_streams_output_and_returns_the_tool_exit_code,
    |db| {
        let tools = Tools::new();
        let s = tools.server(db);
        let alice = s.token("alice");
        let out = s.cli(
            &alice,
            &[
                "exec", "--reason", "look", "--", "argv", "get", "pods", "-A",
            ],
        );
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "arg[get]\narg[pods]\narg[-A]\n"
        );
        assert!(stderr(&out).contains("stderr: 3 args"), "{}", stderr(&out));
        assert_eq!(tools.take_calls(), vec![vec!["get", "pods", "-A"]]);

        let out = s.cli(&alice, &["exec", "--", "argv", "exit", "3"]);
        assert_eq!(
            out.status.code(),
            Some(3),
            "the tool's exit code: {}",
            stderr(&out)
        );
        assert!(stderr(&out).contains("failed (exit 3)"), "{}", stderr(&out));

        // JSON: the finished run on stdout, its transcript hash in the audit log.
        let run = cli_json(&s, &alice, &["exec", "--", "argv", "get", "x"]);
        let id = id_of(&run);
        assert!(id.starts_with("run_"));
        assert_eq!(run["state"], "succeeded");
        assert_eq!(run["exit_code"], 0);
        assert_eq!(run["argv"], json!([tools.argv_path(), "get", "x"]));
        assert_eq!(run["requester"], "alice");
        let transcript = s.cli(&alice, &["run", "transcript", &id]);
        assert!(transcript.status.success());
        // stdout and stderr as they arrived: their relative order is not fixed.
        let mut lines: Vec<String> = String::from_utf8_lossy(&transcript.stdout)
            .lines()
            .map(String::from)
            .collect();
        lines.sort();
        assert_eq!(lines, ["arg[get]", "arg[x]", "stderr: 2 args"]);
        let sha = sha256_hex(&transcript.stdout);
        assert_eq!(run["transcript_sha256"], sha.as_str());
        let events = audit_events(&s, &format!("run:{id}"));
        let kinds: Vec<&str> = events.iter().map(|e| e["kind"].as_str().unwrap()).collect();
        assert_eq!(kinds, ["run.created", "run.started", "run.finished"]);
        assert_eq!(events[2]["data"]["transcript_sha256"], sha.as_str());
        assert_eq!(events[2]["data"]["exit_code"], 0);

        // --no-wait --output json prints the run object and returns at once.
        let r = cli_json(
            &s,
            &alice,
            &["exec", "--no-wait", "--", "argv", "get", "later"],
        );
        assert!(
            matches!(r["state"].as_str(), Some("running" | "succeeded")),
            "{r}"
        );
        wait_run(&s, &alice, &id_of(&r), 10, finished);
        audit_verifies(&s);
    }
);

both_stores!(
    approval_needed_exec_waits_is_approved_by_another_user_and_runs_once,
    |db| {
        let tools = Tools::new();
        let s = tools.server(db);
        let (alice, bob, carol) = (s.token("alice"), s.token("bob"), s.token("carol"));
        let waiting = spawn_cli(
            &s,
            &alice,
            &[
                "exec", "--reason", "INC-7", "--", "argv", "delete", "pod", "web-1", "-n",
                "payments",
            ],
        );
        let id = {
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            loop {
                let queue = s.json(&bob, &["run", "list", "--to-review"]);
                if let Some(r) = queue.as_array().and_then(|a| a.first()) {
                    break id_of(r);
                }
                assert!(std::time::Instant::now() < deadline, "no run to review");
                std::thread::sleep(Duration::from_millis(100));
            }
        };
        let pending = s.json(&bob, &["run", "show", &id]);
        assert_eq!(pending["state"], "pending");
        assert_eq!(pending["approvals"]["count"], 1);
        assert!(
            tools.take_calls().is_empty(),
            "nothing runs before approval"
        );

        let own = s.cli(&alice, &["review", &id, "--approve"]);
        assert_eq!(own.status.code(), Some(1));
        assert!(
            stderr(&own).contains("cannot review your own run"),
            "{}",
            stderr(&own)
        );
        let outsider = s.cli(&carol, &["review", &id, "--approve"]);
        assert_eq!(outsider.status.code(), Some(1), "carol is not a reviewer");
        assert!(
            stderr(&outsider).contains("reviewers are: payments-eng"),
            "{}",
            stderr(&outsider)
        );

        let approved = s.json(&bob, &["review", &id, "--approve", "--comment", "go"]);
        assert_eq!(approved["reviews"][0]["reviewer"], "bob");
        let (code, out, err) = finish_cli(waiting, 20);
        assert_eq!(code, 0, "{err}");
        assert!(err.contains(&format!("run {id} needs approval")), "{err}");
        assert_eq!(
            out,
            "arg[delete]\narg[pod]\narg[web-1]\narg[-n]\narg[payments]\n"
        );
        let r = s.json(&alice, &["run", "show", &id]);
        assert_eq!(r["state"], "succeeded");
        // Exactly once: one call, and starting it again is refused.
        assert_eq!(tools.take_calls().len(), 1);
        let (status, _, again) = s.http(
            "POST",
            &format!("/api/v1/runs/{id}/start"),
            Some(&alice),
            Some("{}"),
        );
        assert_eq!(status, 409, "{again}");
        assert_eq!(again["current_state"], "succeeded");
        let late = s.cli(&carol, &["review", &id, "--deny"]);
        assert_eq!(late.status.code(), Some(1));
        assert!(tools.take_calls().is_empty());
        assert_eq!(
            s.audit_kinds(&format!("run:{id}")),
            [
                "run.created",
                "run.reviewed",
                "run.approved",
                "run.started",
                "run.finished"
            ]
        );
        audit_verifies(&s);
    }
);

both_stores!(
    deny_rule_no_rule_and_unknown_tool_are_refused_and_nothing_runs,
    |db| {
        let tools = Tools::new();
        let s = tools.server(db);
        let alice = s.token("alice");
        let deny = s.cli(
            &alice,
            &["exec", "--", "argv", "delete", "deployment", "web"],
        );
        assert_eq!(deny.status.code(), Some(1));
        assert!(
            stderr(&deny).contains("deleting anything but a pod goes through a pull request"),
            "{}",
            stderr(&deny)
        );
        let none = s.cli(&alice, &["exec", "--", "argv", "exec", "-it", "web"]);
        assert_eq!(none.status.code(), Some(1));
        assert!(
            stderr(&none).contains("no rule of tool `argv` matches"),
            "{}",
            stderr(&none)
        );
        let unknown = s.cli(&alice, &["exec", "--", "rm", "-rf", "/"]);
        assert_eq!(unknown.status.code(), Some(1));
        assert!(
            stderr(&unknown).contains("tool \"rm\" (configured tools: "),
            "{}",
            stderr(&unknown)
        );
        assert!(tools.take_calls().is_empty(), "nothing ran");
        assert_eq!(
            s.json(&alice, &["run", "list"]),
            json!([]),
            "no runs were created"
        );
        assert_eq!(s.audit_kinds("tool:argv"), ["run.refused", "run.refused"]);
        assert_eq!(s.audit_kinds("tool:rm"), ["run.refused"]);
        audit_verifies(&s);
    }
);

both_stores!(
    rate_limit_returns_429_and_holds_across_a_server_restart,
    |db| {
        let tools = Tools::new();
        let mut s = tools.server(db);
        let alice = s.token("alice");
        for _ in 0..2 {
            let ok = s.cli(&alice, &["exec", "--", "argv", "limited"]);
            assert_eq!(ok.status.code(), Some(0), "{}", stderr(&ok));
        }
        let limited = s.cli(&alice, &["exec", "--", "argv", "limited", "again"]);
        assert_eq!(limited.status.code(), Some(1));
        assert!(
            stderr(&limited).contains("rate limit: 2 per 1h, next allowed in "),
            "{}",
            stderr(&limited)
        );
        s.kill9();
        s.boot();
        let body = json!({"tool": "argv", "args": ["limited"]});
        let (status, retry_after, problem) = post_raw(&s, "/api/v1/runs", &alice, &body);
        assert_eq!(status, 429, "{problem}");
        let retry: u64 = retry_after.expect("Retry-After").parse().unwrap();
        assert!((3000..=3600).contains(&retry), "{retry}");
        assert_eq!(problem["limit"], 2);
        assert_eq!(problem["window"], 3600);
        assert!(
            problem["rule"]
                .as_str()
                .unwrap()
                .contains("[\"limited\", \"**\"]"),
            "{problem}"
        );
        assert!(problem["next_allowed_at"].as_str().unwrap().ends_with('Z'));
        let refused = s.json(&alice, &["run", "show", problem["run"].as_str().unwrap()]);
        assert_eq!(refused["state"], "rate_limited");
        // Per principal: bob is not limited by alice's runs.
        let bob = s.token("bob");
        assert_eq!(
            s.cli(&bob, &["exec", "--", "argv", "limited"])
                .status
                .code(),
            Some(0)
        );
        assert_eq!(tools.take_calls().len(), 3, "two for alice, one for bob");
        audit_verifies(&s);
    }
);

#[test]
fn timeout_kills_the_whole_process_group() {
    let tools = Tools::new();
    let s = tools.server(Db::Sqlite);
    let alice = s.token("alice");
    let started = std::time::Instant::now();
    let out = s.cli(&alice, &["exec", "--", "spawner"]);
    assert_eq!(out.status.code(), Some(124), "{}", stderr(&out));
    assert!(started.elapsed() < Duration::from_secs(15));
    assert!(String::from_utf8_lossy(&out.stdout).contains("spawned"));
    assert!(stderr(&out).contains("timed_out"), "{}", stderr(&out));
    let pid: u32 = read_when_present(&tools.calls_dir().join("grandchild.pid"), 5)
        .trim()
        .parse()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while alive(pid) {
        assert!(
            std::time::Instant::now() < deadline,
            "grandchild {pid} survived the timeout"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let runs = s.json(&alice, &["run", "list", "--state", "timed_out"]);
    assert_eq!(runs.as_array().unwrap().len(), 1);
    assert!(runs[0]["error"].as_str().unwrap().contains("timeout of 2s"));
}

#[test]
fn cancel_kills_a_running_run_and_its_group() {
    let tools = Tools::new();
    let s = tools.server(Db::Sqlite);
    let alice = s.token("alice");
    let r = cli_json(
        &s,
        &alice,
        &["exec", "--no-wait", "--", "argv", "sleep", "30"],
    );
    let id = id_of(&r);
    wait_run(&s, &alice, &id, 5, |r| r["state"] == "running");
    let carol = s.token("carol");
    let no = s.cli(&carol, &["run", "cancel", &id]);
    assert_eq!(
        no.status.code(),
        Some(1),
        "carol is neither requester nor reviewer"
    );
    s.json(&alice, &["run", "cancel", &id, "--comment", "wrong pod"]);
    let r = wait_run(&s, &alice, &id, 10, finished);
    assert_eq!(r["state"], "failed");
    assert!(
        r["error"].as_str().unwrap().contains("cancelled by alice"),
        "{r}"
    );
    assert_eq!(
        s.audit_kinds(&format!("run:{id}")),
        [
            "run.created",
            "run.started",
            "run.cancelled",
            "run.finished"
        ]
    );
}

#[test]
fn child_gets_only_the_tool_environment_and_an_empty_private_directory() {
    let tools = Tools::new();
    let s = tools.server(Db::Sqlite);
    let alice = s.token("alice");
    let out = s.cli(&alice, &["exec", "--", "envdump"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let vars: Vec<&str> = text
        .lines()
        .take_while(|l| !l.starts_with("fds:"))
        .filter_map(|l| l.split_once('=').map(|(k, _)| k))
        .collect();
    let mut sorted = vars.clone();
    sorted.sort();
    // PWD and SHLVL are set by the script's own /bin/sh.
    let allowed = [
        "LANG",
        "OLDPWD",
        "PATH",
        "PWD",
        "SHLVL",
        "TOOL_CREDENTIAL",
        "_",
    ];
    for v in &sorted {
        assert!(
            allowed.contains(v),
            "unexpected variable {v} in the tool's environment:\n{text}"
        );
    }
    assert!(text.contains("TOOL_CREDENTIAL=s3cret-for-the-tool"));
    assert!(
        !text.contains("AIRLOCK"),
        "airlock's own environment leaked:\n{text}"
    );
    assert!(!text.contains(&s.admin), "the bootstrap token leaked");
    // Only stdin, stdout, stderr (and ls's own directory handle) are open.
    let fds = text.lines().find(|l| l.starts_with("fds:")).unwrap();
    let n: Vec<&str> = fds.trim_start_matches("fds:").split_whitespace().collect();
    assert!(n.len() <= 4, "descriptors leaked into the tool: {fds}");
    assert!(
        text.contains("entries: 0"),
        "cwd is an empty private directory:\n{text}"
    );
    // The server is not dumpable; as root the kernel lets anyone read it anyway.
    let is_root = std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"));
    if !is_root {
        assert!(text.contains("parent-environ: unreadable"), "{text}");
    }
}

#[test]
fn tool_with_run_as_cannot_read_the_servers_files_or_process() {
    let tools = Tools::new();
    let s = tools.server(Db::Sqlite);
    let alice = s.token("alice");
    let root = std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"));
    let out = s.cli(&alice, &["exec", "--", "envdump-nobody"]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if root {
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        let nobody = std::process::Command::new("id")
            .args(["-u", "nobody"])
            .output()
            .unwrap();
        let uid = String::from_utf8_lossy(&nobody.stdout).trim().to_string();
        assert!(text.contains(&format!("uid: {uid}")), "{text}");
        assert!(text.contains("secret-file: unreadable"), "{text}");
        assert!(text.contains("parent-environ: unreadable"), "{text}");
        assert!(
            text.contains("entries: 0"),
            "its private directory is usable: {text}"
        );
    } else {
        // Changing user needs root (or CAP_SETUID): the run fails, nothing runs as us.
        assert_eq!(out.status.code(), Some(1));
        assert!(
            stderr(&out).contains("Operation not permitted"),
            "{}",
            stderr(&out)
        );
    }
}

#[test]
fn psql_runs_with_credentials_only_the_server_holds() {
    let tools = Tools::new();
    let s = tools.server(Db::Sqlite);
    let alice = s.token("alice");
    let out = s.cli(
        &alice,
        &[
            "exec",
            "--",
            "psql",
            "-X",
            "-A",
            "-t",
            "-c",
            "SELECT 40 + 2, current_user = 'postgres'",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "42|t");
    // SQL errors come back as psql's exit code and stderr.
    let bad = s.cli(
        &alice,
        &["exec", "--", "psql", "-X", "-A", "-t", "-c", "SELEC 1"],
    );
    assert_ne!(bad.status.code(), Some(0));
    assert!(stderr(&bad).contains("syntax error"), "{}", stderr(&bad));
    // Options outside the rule are refused: the user cannot point psql elsewhere.
    let other = s.cli(
        &alice,
        &["exec", "--", "psql", "-h", "evil", "-c", "SELECT 1"],
    );
    assert_eq!(other.status.code(), Some(1));
}

#[test]
fn operator_policy_forbids_exec_and_forbid_wins() {
    let tools = Tools::new();
    let mut setup = Setup::new(Db::Sqlite);
    setup.extra = tools.catalog();
    setup.server_extra = "policy = \"policy.cedar\"".into();
    let s = Server::start_with_files(
        setup,
        &[(
            "policy.cedar",
            r#"@id("carol-no-tools")
forbid(principal == User::"carol", action == Action::"exec", resource == Tool::"argv");
@id("no-payments-restarts")
forbid(principal, action == Action::"operation", resource == Operation::"restart-deployment") when { context.params.namespace == "payments" };"#,
        )],
    );
    let (alice, carol) = (s.token("alice"), s.token("carol"));
    let out = s.cli(&carol, &["exec", "--", "argv", "get", "x"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("carol-no-tools"), "{}", stderr(&out));
    assert_eq!(
        s.cli(&alice, &["exec", "--", "argv", "get", "x"])
            .status
            .code(),
        Some(0)
    );
    let op = s.cli(
        &alice,
        &[
            "operation",
            "run",
            "restart-deployment",
            "--param",
            "namespace=payments",
            "--param",
            "deployment=web",
            "--no-wait",
        ],
    );
    assert_eq!(op.status.code(), Some(1));
    assert!(
        stderr(&op).contains("no-payments-restarts"),
        "{}",
        stderr(&op)
    );
    assert_eq!(tools.take_calls().len(), 1, "only alice's exec ran");
}

#[test]
fn transcript_is_capped_with_a_marker_while_the_stream_is_complete() {
    let tools = Tools::new();
    let s = tools.server(Db::Sqlite);
    let alice = s.token("alice");
    let out = s.cli(&alice, &["exec", "--", "seq", "1", "5000"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let want: String = (1..=5000).map(|i| format!("{i}\n")).collect();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        want,
        "the live stream is never capped"
    );
    let runs = s.json(&alice, &["run", "list"]);
    let id = id_of(&runs[0]);
    let r = s.json(&alice, &["run", "show", &id]);
    assert_eq!(r["transcript_truncated"], true);
    assert_eq!(r["output_bytes"], want.len());
    let t = s.cli(&alice, &["run", "transcript", &id]);
    let body = t.stdout;
    assert!(body.starts_with(&want.as_bytes()[..1024]));
    let marker = format!(
        "\n[airlock: transcript truncated at 1024 bytes; the tool wrote {} bytes]\n",
        want.len()
    );
    assert_eq!(&body[1024..], marker.as_bytes());
    assert_eq!(r["transcript_bytes"], body.len());
    let sha = sha256_hex(&body);
    assert_eq!(r["transcript_sha256"], sha.as_str());
    let finished = audit_events(&s, &format!("run:{id}"))
        .into_iter()
        .find(|e| e["kind"] == "run.finished")
        .unwrap();
    assert_eq!(finished["data"]["transcript_sha256"], sha.as_str());
    assert_eq!(finished["data"]["truncated"], true);
    // Others cannot read the output; reviewers and admins can.
    let carol = s.token("carol");
    assert_eq!(
        s.cli(&carol, &["run", "transcript", &id]).status.code(),
        Some(1)
    );
    assert!(s
        .cli(&s.admin, &["run", "transcript", &id])
        .status
        .success());
}

#[test]
fn pending_run_lapses_after_its_approval_window() {
    let tools = Tools::new();
    let s = tools.server(Db::Sqlite);
    let (alice, bob) = (s.token("alice"), s.token("bob"));
    let r = cli_json(
        &s,
        &alice,
        &["exec", "--no-wait", "--", "argv", "lapse-me", "x"],
    );
    let id = id_of(&r);
    assert_eq!(r["state"], "pending");
    let r = wait_run(&s, &alice, &id, 10, |r| r["state"] != "pending");
    assert_eq!(r["state"], "lapsed", "{r}");
    let late = s.cli(&bob, &["review", &id, "--approve"]);
    assert_eq!(late.status.code(), Some(1));
    assert!(
        stderr(&late).contains("current state: lapsed"),
        "{}",
        stderr(&late)
    );
    assert!(tools.take_calls().is_empty());
    assert_eq!(
        s.audit_kinds(&format!("run:{id}")),
        ["run.created", "run.lapsed"]
    );
}

#[test]
fn runs_beyond_max_concurrent_runs_are_refused_with_429_until_one_ends() {
    let tools = Tools::new();
    let mut setup = Setup::new(Db::Sqlite);
    setup.extra = tools.catalog();
    setup.server_extra = "max_concurrent_runs = 1\n".into();
    let s = Server::start(setup);
    let alice = s.token("alice");
    let first = spawn_cli(&s, &alice, &["exec", "--", "argv", "sleep", "2"]);
    // Wait until the first run executes here.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let runs = s.json(&alice, &["run", "list"]);
        if runs
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["state"] == "running")
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "first run never started"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let body = json!({"tool": "argv", "args": ["echo", "x"]});
    let (status, retry_after, problem) = post_raw(&s, "/api/v1/runs", &alice, &body);
    assert_eq!(status, 429, "{problem}");
    assert_eq!(retry_after.as_deref(), Some("5"));
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("max_concurrent_runs"),
        "{problem}"
    );
    let (code, _, err) = finish_cli(first, 20);
    assert_eq!(code, 0, "{err}");
    let again = s.cli(&alice, &["exec", "--", "argv", "echo", "x"]);
    assert_eq!(again.status.code(), Some(0), "{}", stderr(&again));
}
