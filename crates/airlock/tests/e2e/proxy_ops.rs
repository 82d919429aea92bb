//! Operations (typed parameters, dry runs), the injection corpus, and
//! exactly-once execution with two replicas and across a crash.

use std::time::{Duration, Instant};

use airlock_core::param::HOSTILE_VALUES;
use serde_json::{json, Value};

use crate::both_stores;
use crate::kit::*;
use crate::proxy_kit::*;

both_stores!(
    operation_dry_run_is_shown_to_reviewers_then_runs_after_approval,
    |db| {
        let tools = Tools::new();
        let s = tools.server(db);
        let (alice, bob) = (s.token("alice"), s.token("bob"));
        let list = s.cli(&alice, &["operation", "list"]);
        let text = String::from_utf8_lossy(&list.stdout).into_owned();
        assert!(
            text.contains("restart-deployment") && text.contains("one of payments, ledger"),
            "{text}"
        );

        let params = [
            "--param",
            "namespace=payments",
            "--param",
            "deployment=web-1",
        ];
        let mut args = vec!["operation", "run", "restart-deployment"];
        args.extend(params);
        args.push("--dry-run");
        let dry = s.cli(&alice, &args);
        assert_eq!(dry.status.code(), Some(0), "{}", stderr(&dry));
        let out = String::from_utf8_lossy(&dry.stdout).into_owned();
        assert!(
            out.contains("would run: ")
                && out.contains("rollout restart deployment/web-1 -n payments"),
            "{out}"
        );
        assert!(out.contains("arg[--dry-run=server]"), "{out}");
        assert_eq!(
            tools.take_calls(),
            vec![vec![
                "rollout",
                "restart",
                "deployment/web-1",
                "-n",
                "payments",
                "--dry-run=server"
            ]],
            "only the dry run ran"
        );
        assert_eq!(
            s.audit_kinds("operation:restart-deployment"),
            ["operation.dry_run", "operation.dry_run.finished"],
            "a dry run is audited before it executes, its outcome after"
        );

        let mut args = vec!["operation", "run", "restart-deployment"];
        args.extend(params);
        args.extend(["--reason", "CHG-9", "--no-wait"]);
        let run = cli_json(&s, &alice, &args);
        let id = id_of(&run);
        assert_eq!(run["state"], "pending");
        assert_eq!(run["operation"], "restart-deployment");
        assert_eq!(
            run["params"],
            json!({"deployment": "web-1", "namespace": "payments"})
        );
        // Reviewers see the dry run next to the exact argv that will run.
        let seen = s.json(&bob, &["run", "show", &id]);
        assert_eq!(
            seen["argv"],
            json!([
                tools.argv_path(),
                "rollout",
                "restart",
                "deployment/web-1",
                "-n",
                "payments"
            ])
        );
        assert_eq!(seen["dry_run"]["exit_code"], 0);
        assert!(seen["dry_run"]["output"]
            .as_str()
            .unwrap()
            .contains("arg[--dry-run=server]"));
        assert_eq!(
            tools.take_calls().len(),
            1,
            "the dry run ran when the run was created"
        );

        s.json(&bob, &["review", &id, "--approve"]);
        let done = wait_run(&s, &alice, &id, 10, finished);
        assert_eq!(done["state"], "succeeded", "{done}");
        assert_eq!(
            tools.take_calls(),
            vec![vec![
                "rollout",
                "restart",
                "deployment/web-1",
                "-n",
                "payments"
            ]]
        );
        assert_eq!(
            s.audit_kinds(&format!("run:{id}")),
            [
                "run.created",
                "run.dry_run",
                "run.reviewed",
                "run.approved",
                "run.started",
                "run.finished"
            ]
        );

        // An invalid parameter names the parameter, the value and the rule; nothing runs.
        let bad = s.cli(
            &alice,
            &[
                "operation",
                "run",
                "restart-deployment",
                "--param",
                "namespace=payments",
                "--param",
                "deployment=web; rm -rf /",
            ],
        );
        assert_eq!(bad.status.code(), Some(1));
        let err = stderr(&bad);
        assert!(
            err.contains("deployment")
                && err.contains("web; rm -rf /")
                && err.contains("^[a-z0-9-]{1,63}$"),
            "{err}"
        );
        let bad = s.cli(
            &alice,
            &[
                "operation",
                "run",
                "restart-deployment",
                "--param",
                "namespace=kube-system",
                "--param",
                "deployment=web",
            ],
        );
        assert!(
            stderr(&bad).contains("must be one of payments, ledger"),
            "{}",
            stderr(&bad)
        );
        assert!(tools.take_calls().is_empty());
        audit_verifies(&s);
    }
);

/// Runs one value through the operation and through exec (raw API, so NUL
/// and newlines reach the server); returns how many were accepted.
fn try_value(s: &Server, tools: &Tools, token: &str, v: &str) -> usize {
    let mut accepted = 0;
    let cases = [
        (
            "/api/v1/operations/echo-anything/runs",
            json!({"params": {"v": v}}),
            vec![
                "op".to_string(),
                format!("--value={v}"),
                v.to_string(),
                format!("x/{v}"),
            ],
        ),
        (
            "/api/v1/runs",
            json!({"tool": "argv", "args": ["echo", v]}),
            vec!["echo".to_string(), v.to_string()],
        ),
    ];
    for (path, body, expect) in cases {
        let (status, _, r) = post_raw(s, path, token, &body);
        match status {
            400 => {
                assert!(tools.take_calls().is_empty(), "{v:?} was refused but ran");
            }
            201 => {
                accepted += 1;
                let id = id_of(&r);
                let done = wait_run(s, token, &id, 10, finished);
                assert_eq!(done["state"], "succeeded", "{v:?}: {done}");
                let mut argv = vec![tools.argv_path()];
                argv.extend(expect.iter().cloned());
                assert_eq!(done["argv"], json!(argv), "{v:?}");
                assert_eq!(
                    tools.take_calls(),
                    vec![expect.clone()],
                    "{v:?} changed the arguments"
                );
            }
            other => panic!("{v:?} on {path}: HTTP {other}: {r}"),
        }
    }
    accepted
}

#[test]
fn injection_corpus_never_yields_an_extra_argument_or_a_shell() {
    let tools = Tools::new();
    let s = tools.server(Db::Sqlite);
    let alice = s.token("alice");
    let marker = tools.dir.join("pwned");
    let m = marker.display().to_string();
    let mut corpus: Vec<String> = HOSTILE_VALUES.iter().map(|v| v.to_string()).collect();
    corpus.extend([
        format!("$(touch {m})"),
        format!("`touch {m}`"),
        format!("x; touch {m}"),
        format!("x\ntouch {m}"),
        format!("x && touch {m}"),
        format!("| touch {m}"),
        "A".repeat(5000),
    ]);
    assert!(corpus.len() >= 30);
    let mut accepted = 0;
    for v in &corpus {
        accepted += try_value(&s, &tools, &alice, v);
    }
    assert!(!marker.exists(), "a value reached a shell");
    // Most values pass validation and stay inert; NUL, newlines, bidi and
    // leading dashes are refused.
    assert!(accepted >= 40, "only {accepted} accepted");
    for v in ["x\0y", "x\ny", "\u{202E}x", "-n", "--kubeconfig=/x"] {
        let (status, _, r) = post_raw(
            &s,
            "/api/v1/operations/echo-anything/runs",
            &alice,
            &json!({"params": {"v": v}}),
        );
        assert_eq!(status, 400, "{v:?}: {r}");
        assert_eq!(r["field"], "params.v");
    }
    audit_verifies(&s);
}

#[test]
fn approved_runs_execute_exactly_once_with_two_replicas() {
    let tools = Tools::new();
    let a = tools.server(Db::Postgres);
    let b = a.replica();
    let (alice, bob) = (a.token("alice"), a.token("bob"));
    let mut ids = vec![];
    for i in 0..5 {
        let pod = format!("pod-{i}");
        let r = cli_json(
            &a,
            &alice,
            &[
                "exec",
                "--no-wait",
                "--",
                "argv",
                "delete",
                "pod",
                &pod,
                "-n",
                "payments",
            ],
        );
        ids.push(id_of(&r));
    }
    // Approvals arrive on both replicas; both background loops are running.
    for (i, id) in ids.iter().enumerate() {
        let on = if i % 2 == 0 { &a } else { &b };
        on.json(&bob, &["review", id, "--approve"]);
    }
    for id in &ids {
        let r = wait_run(&a, &alice, id, 20, finished);
        assert_eq!(r["state"], "succeeded", "{r}");
    }
    std::thread::sleep(Duration::from_secs(2));
    let mut calls = tools.take_calls();
    calls.sort();
    let want: Vec<Vec<String>> = (0..5)
        .map(|i| {
            ["delete", "pod", &format!("pod-{i}"), "-n", "payments"]
                .map(String::from)
                .to_vec()
        })
        .collect();
    assert_eq!(calls, want, "each approved run ran exactly once");
    for id in &ids {
        let kinds = a.audit_kinds(&format!("run:{id}"));
        assert_eq!(
            kinds.iter().filter(|k| *k == "run.started").count(),
            1,
            "{kinds:?}"
        );
    }
    audit_verifies(&a);
}

both_stores!(
    run_of_a_crashed_server_is_marked_failed_and_never_rerun,
    |db| {
        let tools = Tools::new();
        let mut s = tools.server(db);
        let alice = s.token("alice");
        let r = cli_json(
            &s,
            &alice,
            &["exec", "--no-wait", "--", "argv", "sleep", "60"],
        );
        let id = id_of(&r);
        wait_run(&s, &alice, &id, 5, |r| r["state"] == "running");
        let deadline = Instant::now() + Duration::from_secs(5);
        while tools.take_calls().is_empty() {
            assert!(Instant::now() < deadline, "the tool never started");
            std::thread::sleep(Duration::from_millis(50));
        }
        s.kill9();
        s.boot();
        // After the dead server's lease (30 s) runs out, the run is failed, not re-run.
        let r: Value = wait_run(&s, &alice, &id, 60, finished);
        assert_eq!(r["state"], "failed", "{r}");
        let err = r["error"].as_str().unwrap();
        assert!(
            err.contains("stopped before the run finished") && err.contains("not re-run"),
            "{err}"
        );
        std::thread::sleep(Duration::from_secs(2));
        assert!(tools.take_calls().is_empty(), "the run was started again");
        let kinds = s.audit_kinds(&format!("run:{id}"));
        assert_eq!(kinds, ["run.created", "run.started", "run.finished"]);
        audit_verifies(&s);
    }
);

both_stores!(
    dry_runs_count_against_the_operation_rate_limit_and_are_refused_with_429_beyond_it,
    |db| {
        let tools = Tools::new();
        let s = tools.server(db);
        let alice = s.token("alice");
        let path = "/api/v1/operations/restart-deployment/runs";
        let body =
            json!({"params": {"namespace": "payments", "deployment": "web-1"}, "dry_run": true});
        // restart-deployment allows 3 per hour.
        for i in 0..3 {
            let (status, _, v) = post_raw(&s, path, &alice, &body);
            assert_eq!(status, 200, "dry run {i}: {v}");
        }
        let (status, retry_after, problem) = post_raw(&s, path, &alice, &body);
        assert_eq!(status, 429, "{problem}");
        let retry: u64 = retry_after.expect("Retry-After").parse().unwrap();
        assert!((3000..=3600).contains(&retry), "{retry}");
        assert_eq!(problem["limit"], 3);
        assert_eq!(problem["window"], 3600);
        assert!(
            problem["detail"]
                .as_str()
                .unwrap()
                .contains("rate limit: 3 per 1h"),
            "{problem}"
        );
        assert_eq!(
            tools.take_calls().len(),
            3,
            "the refused dry run did not run"
        );
        let kinds = s.audit_kinds("operation:restart-deployment");
        assert_eq!(
            kinds.last().map(String::as_str),
            Some("operation.dry_run.rate_limited"),
            "{kinds:?}"
        );
        // The same accounting as real runs: alice's real run is refused too.
        let run =
            json!({"params": {"namespace": "payments", "deployment": "web-1"}, "reason": "CHG-1"});
        let (status, _, problem) = post_raw(&s, path, &alice, &run);
        assert_eq!(status, 429, "{problem}");
        // Per principal: bob still may.
        let bob = s.token("bob");
        let (status, _, v) = post_raw(&s, path, &bob, &body);
        assert_eq!(status, 200, "{v}");
        audit_verifies(&s);
    }
);
