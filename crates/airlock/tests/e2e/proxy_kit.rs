//! Test tools for the tool proxy: small real programs (shell scripts run by
//! the kernel through their `#!`, never through airlock) that record exactly
//! how they were called, plus a catalog that uses them and `psql`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::kit::*;

/// Records its arguments NUL-separated (one file per call) and echoes them.
const ARGV_SH: &str = r#"#!/bin/sh
printf '%s\0' "$@" > "$RECORD/call.$$"
for a in "$@"; do printf 'arg[%s]\n' "$a"; done
echo "stderr: $# args" >&2
if [ "$1" = "exit" ]; then exit "$2"; fi
if [ "$1" = "sleep" ]; then sleep "$2"; fi
exit 0
"#;

/// Starts a grandchild that would outlive it, records the grandchild's pid, then hangs.
const SPAWNER_SH: &str = r#"#!/bin/sh
sleep 300 &
echo $! > "$RECORD/grandchild.pid"
echo "spawned $!"
sleep 300
"#;

/// Prints its environment, its open descriptors and whether it can read its parent's environment.
const ENVDUMP_SH: &str = r#"#!/bin/sh
env
echo "fds: $(ls /proc/self/fd | tr '\n' ' ')"
if cat /proc/$PPID/environ > /dev/null 2>&1; then echo "parent-environ: readable"; else echo "parent-environ: unreadable"; fi
echo "cwd: $(pwd) entries: $(ls -A | wc -l)"
echo "uid: $(id -u)"
if [ -n "$SECRET_FILE" ]; then
  if cat "$SECRET_FILE" > /dev/null 2>&1; then echo "secret-file: readable"; else echo "secret-file: unreadable"; fi
fi
"#;

/// Scripts in a directory of their own, created before the server starts.
pub struct Tools {
    pub dir: PathBuf,
}

impl Tools {
    pub fn new() -> Tools {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(unique("airlock-tools-"));
        std::fs::create_dir_all(dir.join("calls")).unwrap();
        for (name, text) in [
            ("argv.sh", ARGV_SH),
            ("spawner.sh", SPAWNER_SH),
            ("envdump.sh", ENVDUMP_SH),
        ] {
            let p = dir.join(name);
            std::fs::write(&p, text).unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        // Stands in for airlock's own files (keys, configuration): owner-only.
        let secret = dir.join("secret");
        std::fs::write(&secret, "server-only").unwrap();
        std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
        Tools { dir }
    }

    pub fn calls_dir(&self) -> PathBuf {
        self.dir.join("calls")
    }

    pub fn argv_path(&self) -> String {
        self.dir.join("argv.sh").display().to_string()
    }

    /// Every recorded call of argv.sh so far (argument lists), removing them.
    pub fn take_calls(&self) -> Vec<Vec<String>> {
        let mut out = vec![];
        for e in std::fs::read_dir(self.calls_dir()).unwrap() {
            let p = e.unwrap().path();
            if !p
                .file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("call.")
            {
                continue;
            }
            let bytes = std::fs::read(&p).unwrap();
            std::fs::remove_file(&p).unwrap();
            let mut args: Vec<String> = bytes
                .split(|b| *b == 0)
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect();
            args.pop(); // after the last NUL
            out.push(args);
        }
        out
    }

    /// The proxy catalog: tools and operations on top of the default catalog
    /// (reviewers: payments-eng = alice and bob).
    pub fn catalog(&self) -> String {
        let d = self.dir.display();
        let psql = std::env::var("AIRLOCK_TEST_PSQL").unwrap_or_else(|_| {
            panic!("AIRLOCK_TEST_PSQL is not set: run ./scripts/test (scripts/setup/proxy.sh finds or installs psql)")
        });
        let (host, port) = pg_host_port();
        let cfg: postgres::Config = pg_url().parse().unwrap();
        let user = cfg.get_user().unwrap_or("postgres").to_string();
        let db = cfg.get_dbname().unwrap_or("postgres").to_string();
        format!(
            r#"
[[tool]]
name = "argv"
path = "{d}/argv.sh"
run_as = "server"
env = {{ RECORD = "{d}/calls", TOOL_CREDENTIAL = "s3cret-for-the-tool" }}
timeout = "20s"
[[tool.rule]]
args = ["get", "**"]
action = "allow"
[[tool.rule]]
args = ["exit", "*"]
action = "allow"
[[tool.rule]]
args = ["echo", "*"]
action = "allow"
[[tool.rule]]
args = ["sleep", "*"]
action = "allow"
[[tool.rule]]
args = ["limited", "**"]
action = "allow"
rate = "2/1h"
[[tool.rule]]
args = ["delete", "pod", "*", "-n", "*"]
action = "approve"
approvals = {{ count = 1, reviewers = ["payments-eng"] }}
rate = "5/10m"
[[tool.rule]]
args = ["delete", "**"]
action = "deny"
reason = "deleting anything but a pod goes through a pull request"
[[tool.rule]]
args = ["lapse-me", "*"]
action = "approve"
approvals = {{ count = 1, reviewers = ["payments-eng"] }}
approval_timeout = "2s"

[[tool]]
name = "seq"
path = "/usr/bin/seq"
run_as = "server"
transcript_cap = 1024
[[tool.rule]]
args = ["1", "*"]
action = "allow"

[[tool]]
name = "spawner"
path = "{d}/spawner.sh"
run_as = "server"
env = {{ RECORD = "{d}/calls" }}
timeout = "2s"
[[tool.rule]]
args = ["**"]
action = "allow"

[[tool]]
name = "envdump"
path = "{d}/envdump.sh"
run_as = "server"
env = {{ TOOL_CREDENTIAL = "s3cret-for-the-tool" }}
[[tool.rule]]
args = []
action = "allow"

[[tool]]
name = "envdump-nobody"
path = "{d}/envdump.sh"
run_as = "nobody"
env = {{ SECRET_FILE = "{d}/secret" }}
[[tool.rule]]
args = []
action = "allow"

[[tool]]
name = "psql"
path = "{psql}"
run_as = "server"
env = {{ PGHOST = "{host}", PGPORT = "{port}", PGUSER = "{user}", PGDATABASE = "{db}" }}
[[tool.rule]]
args = ["-X", "-A", "-t", "-c", "*"]
action = "allow"

[[operation]]
name = "restart-deployment"
description = "Rolling restart of one deployment"
tool = "argv"
run_as = "server"
args = ["rollout", "restart", "deployment/{{deployment}}", "-n", "{{namespace}}"]
dry_run_args = ["rollout", "restart", "deployment/{{deployment}}", "-n", "{{namespace}}", "--dry-run=server"]
approvals = {{ count = 1, reviewers = ["payments-eng"] }}
rate = "3/1h"
[operation.params.namespace]
enum = ["payments", "ledger"]
[operation.params.deployment]
pattern = "^[a-z0-9-]{{1,63}}$"

[[operation]]
name = "echo-anything"
description = "Passes one free parameter in three positions"
tool = "argv"
run_as = "server"
args = ["op", "--value={{v}}", "{{v}}", "x/{{v}}"]
approvals = {{ count = 0 }}
[operation.params.v]
pattern = "(?s).*"
"#
        )
    }

    /// A server with the proxy catalog.
    pub fn server(&self, db: Db) -> Server {
        let mut setup = Setup::new(db);
        setup.extra = self.catalog();
        Server::start(setup)
    }
}

impl Drop for Tools {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// Runs the CLI in the background (e.g. an `airlock exec` that waits for approval).
pub fn spawn_cli(s: &Server, token: &str, args: &[&str]) -> Child {
    Command::new(BIN)
        .args(args)
        .env("AIRLOCK_ADDR", &s.addr)
        .env("AIRLOCK_TOKEN", token)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Waits for a background CLI and returns (exit code, stdout, stderr).
pub fn finish_cli(child: Child, secs: u64) -> (i32, String, String) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut child = child;
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("airlock CLI did not finish within {secs}s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Polls a run until `pred` holds.
pub fn wait_run(
    s: &Server,
    token: &str,
    id: &str,
    secs: u64,
    pred: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let (status, _, r) = s.http("GET", &format!("/api/v1/runs/{id}"), Some(token), None);
        assert_eq!(status, 200, "{r}");
        if pred(&r) {
            return r;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting on run {id}: {r}\nlog: {}",
            s.log_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Terminal run states.
pub fn finished(r: &Value) -> bool {
    !matches!(
        r["state"].as_str(),
        Some("pending" | "approved" | "running")
    )
}

/// A raw POST returning status, `Retry-After` and the JSON body.
pub fn post_raw(s: &Server, path: &str, token: &str, body: &Value) -> (u16, Option<String>, Value) {
    let agent = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(30))
        .build();
    let res = agent
        .post(&format!("{}{path}", s.addr))
        .set("Authorization", &format!("Bearer {token}"))
        .send_json(body.clone());
    let resp = match res {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("transport error: {e}"),
    };
    let status = resp.status();
    let retry = resp.header("retry-after").map(str::to_string);
    let text = resp.into_string().unwrap_or_default();
    (
        status,
        retry,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// Full audit events (not just kinds) for a subject.
pub fn audit_events(s: &Server, subject: &str) -> Vec<Value> {
    let out = s.cli(&s.admin, &["audit", "export"]);
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|e| e["subject"] == subject)
        .collect()
}

/// Asserts `airlock audit verify` passes (online and offline).
pub fn audit_verifies(s: &Server) {
    let v = s.json(&s.admin, &["audit", "verify"]);
    assert_eq!(v["ok"], true, "{v}");
}

/// Whether a process is still alive (zombies count as dead).
pub fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit(')')
            .next()
            .and_then(|rest| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

/// Reads a file that a tool writes, waiting for it to appear.
pub fn read_when_present(p: &Path, secs: u64) -> String {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Ok(t) = std::fs::read_to_string(p) {
            if !t.trim().is_empty() {
                return t;
            }
        }
        assert!(Instant::now() < deadline, "{} never appeared", p.display());
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// SHA-256 (hex) of bytes, computed here independently of the server.
pub fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(data))
}

/// Runs the CLI with `--output json` placed first (so it never lands after
/// `airlock exec --`), asserting success; parses stdout.
pub fn cli_json(s: &Server, token: &str, args: &[&str]) -> Value {
    let mut a = vec!["--output", "json"];
    a.extend_from_slice(args);
    let out = s.cli(token, &a);
    assert!(
        out.status.success(),
        "airlock {args:?} failed: {}\n{}",
        stderr(&out),
        String::from_utf8_lossy(&out.stdout)
    );
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)))
}
