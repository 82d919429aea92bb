//! The tool-proxy commands: `airlock exec`, `airlock operation …`,
//! `airlock run …`. Output of a run streams live (stdout to stdout, stderr to
//! stderr) and `airlock exec` exits with the tool's exit code.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::time::{Duration, Instant};

use airlock_api::runs::{DryRunPreview, DryRunView, RunView};
use airlock_api::stream::{self, Kind};
use airlock_api::Problem;
use anyhow::{anyhow, bail, Context, Result};
use clap::Subcommand;
use serde_json::{json, Value};

use crate::client::{decode_answer, Client};
use crate::output::review_line;
use crate::{emit, emit_as, Output};

/// Exit status when a run was killed at its timeout (as `timeout(1)`).
const EXIT_TIMED_OUT: i32 = 124;

/// `airlock operation …`
#[derive(Subcommand)]
pub enum OperationCommand {
    /// Operations in the catalog with their parameters.
    List,
    /// Run an operation (parameters are validated before anything runs).
    Run {
        name: String,
        /// A parameter, repeated: --param namespace=payments
        #[arg(long = "param", value_name = "NAME=VALUE")]
        params: Vec<String>,
        #[arg(long, default_value = "")]
        reason: String,
        /// Only run the operation's dry run and show what would run.
        #[arg(long)]
        dry_run: bool,
        /// Do not wait for approval or stream the output; print the run and return.
        #[arg(long)]
        no_wait: bool,
    },
}

/// `airlock run …`
#[derive(Subcommand)]
pub enum RunCommand {
    /// Show one run (argv, state, reviews, dry run, exit code, transcript hash).
    Show { id: String },
    /// List runs, newest first.
    List {
        /// pending, approved, running, succeeded, failed, timed_out, denied, lapsed, rate_limited
        #[arg(long)]
        state: Option<String>,
        /// Only my runs.
        #[arg(long)]
        mine: bool,
        /// Pending runs I may review.
        #[arg(long)]
        to_review: bool,
    },
    /// Print the stored stdout/stderr of a finished run.
    Transcript { id: String },
    /// Follow a run's output until it ends; exits with its exit code.
    Follow { id: String },
    /// Cancel a run (a running one is killed with its whole process group).
    Cancel {
        id: String,
        #[arg(long)]
        comment: Option<String>,
    },
}

/// Whether a CLI argument names a run (`run_…`) rather than a request.
pub fn is_run_id(id: &str) -> bool {
    id.starts_with("run_")
}

fn run_path_id(id: &str) -> Result<&str> {
    let ok = id
        .strip_prefix("run_")
        .is_some_and(|r| !r.is_empty() && r.bytes().all(|b| b.is_ascii_alphanumeric()));
    if !ok {
        bail!("`{id}` is not a run id (run ids look like run_abcd…; see `airlock run list`)");
    }
    Ok(id)
}

fn s<'a>(v: &'a Value, k: &str) -> &'a str {
    v.get(k).and_then(Value::as_str).unwrap_or("-")
}

/// A value as JSON text (`null`, `3`, `["sre"]`), as details print numbers
/// that may be absent and lists of reviewers.
fn json_text(v: &impl serde::Serialize) -> String {
    serde_json::to_string(v).unwrap_or_default()
}

/// An argv as a person would type it (quoted where needed, escapes visible).
pub fn argv_display(argv: &[String]) -> String {
    argv.iter()
        .map(|x| {
            let plain = !x.is_empty()
                && x.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_./=:,@%+".contains(&b));
            if plain {
                x.to_string()
            } else {
                format!("{x:?}")
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// One line for a run.
pub fn run_line(r: &RunView) -> String {
    let what = match &r.operation {
        Some(op) => format!("operation {op}"),
        None => argv_display(&r.argv),
    };
    format!("{}  {:<12}  by {}  {what}", r.id, r.state, r.requester)
}

/// Runs, one line each.
fn run_list(rs: &[RunView]) -> String {
    if rs.is_empty() {
        "no runs".into()
    } else {
        rs.iter().map(run_line).collect::<Vec<_>>().join("\n")
    }
}

/// What an operation's dry run ran and said, indented under a heading line.
fn dry_run_text(d: &DryRunView) -> String {
    format!(
        "{} (exit {})\n{}",
        argv_display(&d.argv),
        json_text(&d.exit_code),
        indent(&d.output)
    )
}

/// A detailed view of one run.
pub fn run_detail(r: &RunView) -> String {
    let mut out = run_line(r);
    out.push_str(&format!("\n  argv: {}", argv_display(&r.argv)));
    if let Some(p) = &r.params {
        let ps: Vec<String> = p.iter().map(|(k, v)| format!("{k}={v}")).collect();
        out.push_str(&format!("\n  params: {}", ps.join(" ")));
    }
    out.push_str(&format!("\n  rule: {}\n  reason: {}", r.rule, r.reason));
    if r.approvals.count > 0 {
        out.push_str(&format!(
            "\n  approvals: {} of {}",
            r.approvals.count,
            json_text(&r.approvals.reviewers)
        ));
    }
    for v in &r.reviews {
        out.push_str(&format!("\n  {}", review_line(v)));
    }
    if let Some(d) = &r.dry_run {
        out.push_str(&format!("\n  dry run: {}", dry_run_text(d)));
    }
    for (t, label) in [
        (&r.started_at, "started"),
        (&r.finished_at, "finished"),
        (&r.next_allowed_at, "next allowed"),
        (&r.lapses_at, "lapses"),
    ] {
        if let Some(t) = t {
            out.push_str(&format!("\n  {label}: {t}"));
        }
    }
    if let Some(c) = r.exit_code {
        out.push_str(&format!("\n  exit code: {c}"));
    }
    if let Some(h) = &r.transcript_sha256 {
        out.push_str(&format!(
            "\n  transcript: {} bytes, sha256 {h}{}",
            json_text(&r.transcript_bytes),
            if r.transcript_truncated {
                " (truncated)"
            } else {
                ""
            }
        ));
    }
    if let Some(e) = &r.error {
        out.push_str(&format!("\n  error: {e}"));
    }
    out
}

fn indent(text: &str) -> String {
    text.lines()
        .map(|l| format!("    | {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The exit status `airlock exec` ends with for a finished run.
pub fn exit_code_of(run: &RunView) -> i32 {
    match run.state.as_str() {
        "succeeded" => 0,
        "timed_out" => EXIT_TIMED_OUT,
        "failed" => run
            .exit_code
            .filter(|c| *c != 0)
            .map(|c| c.clamp(1, 255))
            .unwrap_or(1),
        _ => 1,
    }
}

fn write_all(w: &mut dyn Write, data: &[u8]) {
    if let Err(e) = w.write_all(data).and_then(|_| w.flush()) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
    }
}

/// Copies `len` payload bytes from the stream to `w` in pieces, as they come.
fn copy_payload(r: &mut dyn Read, len: usize, buf: &mut [u8], w: &mut dyn Write) -> Result<()> {
    let mut left = len;
    while left > 0 {
        let want = left.min(buf.len());
        let n = r
            .read(&mut buf[..want])
            .context("the output stream was cut")?;
        if n == 0 {
            bail!("the output stream was cut in the middle of a frame");
        }
        write_all(w, &buf[..n]);
        left -= n;
    }
    Ok(())
}

/// Copies a run stream to the terminal; returns the finished run.
fn follow_stream(resp: ureq::Response, out: Output) -> Result<RunView> {
    // ureq buffers the socket; payloads go from its buffer straight to our output.
    let mut r = resp.into_reader();
    let mut buf = vec![0u8; 256 * 1024];
    let mut run_id = String::new();
    loop {
        let mut head = [0u8; stream::HEADER_LEN];
        if let Err(e) = r.read_exact(&mut head) {
            bail!(
                "the output stream ended before the run finished ({e}); see `airlock run show {run_id}`"
            );
        }
        let (kind, len) = stream::decode_header(head);
        if len > stream::MAX_FRAME {
            bail!("the server sent a frame of {len} bytes; refusing");
        }
        let payload = |r: &mut dyn Read| -> Result<Vec<u8>> {
            let mut payload = vec![0u8; len];
            r.read_exact(&mut payload)
                .context("the output stream was cut")?;
            Ok(payload)
        };
        match Kind::from_u8(kind) {
            // Only named in messages: a start frame this CLI cannot read does not stop the output.
            Some(Kind::Start) => {
                run_id = serde_json::from_slice::<RunView>(&payload(&mut r)?)
                    .map(|run| run.id)
                    .unwrap_or_else(|_| "-".into())
            }
            Some(Kind::Stdout) if out == Output::Text => {
                copy_payload(&mut r, len, &mut buf, &mut std::io::stdout().lock())?
            }
            Some(Kind::Stdout | Kind::Stderr) => {
                copy_payload(&mut r, len, &mut buf, &mut std::io::stderr().lock())?
            }
            Some(Kind::Note) => {
                copy_payload(&mut r, len, &mut buf, &mut std::io::stderr().lock())?;
                eprintln!();
            }
            Some(Kind::End) => {
                return decode_answer("the server's end-of-run frame", &payload(&mut r)?)
            }
            Some(Kind::Error) => {
                let detail = Problem::detail_of(&String::from_utf8_lossy(&payload(&mut r)?));
                bail!(
                    "{} (run {run_id}; see `airlock run show {run_id}`)",
                    detail
                        .as_deref()
                        .unwrap_or("the server could not follow the run")
                );
            }
            None => bail!("unknown frame kind {kind} from the server; upgrade airlock"),
        }
    }
}

/// Ends a streamed run: a summary line unless it simply succeeded.
fn finish(out: Output, run: &RunView) -> i32 {
    match out {
        Output::Json => emit_as(out, run, run_detail),
        Output::Text => {
            if run.state != "succeeded" {
                eprintln!(
                    "airlock: run {} {}{}",
                    run.id,
                    run.state,
                    match (run.exit_code, run.error.as_deref()) {
                        (_, Some(e)) => format!(": {e}"),
                        (Some(c), None) => format!(" (exit {c})"),
                        (None, None) => String::new(),
                    }
                );
            }
        }
    }
    exit_code_of(run)
}

fn is_stream(resp: &ureq::Response) -> bool {
    resp.content_type() == stream::CONTENT_TYPE
}

/// Handles the answer to a create call: a live stream, or a stored run to
/// wait for (unless `no_wait`).
fn handle_created(c: &Client, out: Output, resp: ureq::Response, no_wait: bool) -> Result<i32> {
    if is_stream(&resp) {
        let run = follow_stream(resp, out)?;
        return Ok(finish(out, &run));
    }
    let text = resp.into_string()?;
    // A run has an id; a dry run alone (no run created) has none.
    let has_id = serde_json::from_str::<Value>(&text)
        .map(|v| v.get("id").is_some())
        .unwrap_or(true);
    if !has_id {
        let p: DryRunPreview = decode_answer("the server's dry-run answer", text.as_bytes())?;
        emit_as(out, &p, |p| {
            format!(
                "would run: {}\ndry run:   {}",
                argv_display(&p.argv),
                dry_run_text(&p.dry_run)
            )
        });
        return Ok(if p.dry_run.exit_code == Some(0) { 0 } else { 1 });
    }
    let v: RunView = decode_answer("the server's new run", text.as_bytes())?;
    if no_wait || v.state != "pending" {
        emit_as(out, &v, run_detail);
        return Ok(match v.state.as_str() {
            "pending" | "running" | "approved" | "succeeded" => 0,
            _ => exit_code_of(&v),
        });
    }
    wait_and_stream(c, out, v)
}

/// Waits (with a progress line) until a pending run is decided, then starts
/// it here and streams its output.
fn wait_and_stream(c: &Client, out: Output, run: RunView) -> Result<i32> {
    let id = run.id.clone();
    if out == Output::Text {
        if let Some(d) = &run.dry_run {
            eprintln!("dry run: {}", dry_run_text(d));
        }
        eprintln!(
            "run {id} needs approval ({} of {}); ask a reviewer: airlock review {id} --approve",
            run.approvals.count,
            json_text(&run.approvals.reviewers)
        );
    }
    let started = Instant::now();
    let spinner = ['|', '/', '-', '\\'];
    let mut cur = run;
    let mut i = 0;
    while cur.state == "pending" {
        if out == Output::Text {
            let have = cur.reviews.len();
            eprint!(
                "\r{} {id} pending, {have} review(s), waiting {}s ",
                spinner[i % 4],
                started.elapsed().as_secs()
            );
        }
        i += 1;
        std::thread::sleep(Duration::from_millis(500));
        cur = c.get_as(&format!("/api/v1/runs/{id}"))?;
    }
    if out == Output::Text {
        eprintln!();
    }
    match cur.state.as_str() {
        "approved" => {}
        "running" => return follow(c, out, &id),
        _ => {
            emit_as(out, &cur, run_detail);
            return Ok(exit_code_of(&cur));
        }
    }
    match c.stream(
        "POST",
        &format!("/api/v1/runs/{id}/start"),
        Some(&json!({})),
    ) {
        Ok(resp) if is_stream(&resp) => {
            let run = follow_stream(resp, out)?;
            Ok(finish(out, &run))
        }
        Ok(resp) => {
            let v: RunView =
                decode_answer("the server's started run", resp.into_string()?.as_bytes())?;
            emit_as(out, &v, run_detail);
            Ok(exit_code_of(&v))
        }
        // Started elsewhere meanwhile (e.g. after the grace period): follow it.
        Err(e) if e.to_string().ends_with("[HTTP 409]") => follow(c, out, &id),
        Err(e) => Err(e),
    }
}

fn follow(c: &Client, out: Output, id: &str) -> Result<i32> {
    let resp = c.stream("GET", &format!("/api/v1/runs/{id}/stream"), None)?;
    let run = follow_stream(resp, out)?;
    Ok(finish(out, &run))
}

/// `airlock exec [--reason R] [--no-wait] -- TOOL ARG…`
pub fn exec(
    c: &Client,
    out: Output,
    reason: &str,
    no_wait: bool,
    command: &[String],
) -> Result<i32> {
    let (tool, args) = command
        .split_first()
        .ok_or_else(|| anyhow!("give the command after `--`: airlock exec -- TOOL ARG…"))?;
    let resp = c.stream(
        "POST",
        "/api/v1/runs",
        Some(&json!({"tool": tool, "args": args, "reason": reason, "attach": !no_wait})),
    )?;
    handle_created(c, out, resp, no_wait)
}

/// `airlock operation …`
pub fn operation(c: &Client, out: Output, cmd: OperationCommand) -> Result<i32> {
    match cmd {
        OperationCommand::List => {
            let v = c.get("/api/v1/operations")?;
            emit(out, &v, |v| {
                let mut lines = vec![];
                for o in v.as_array().into_iter().flatten() {
                    lines.push(format!(
                        "{:<28} {}{}",
                        s(o, "name"),
                        s(o, "description"),
                        match o["approvals"]["count"].as_u64() {
                            Some(n) if n > 0 => format!("  [{n} approval(s)]"),
                            _ => String::new(),
                        }
                    ));
                    for p in o["params"].as_array().into_iter().flatten() {
                        lines.push(format!(
                            "    --param {}=…  {}",
                            s(p, "name"),
                            s(p, "accepts")
                        ));
                    }
                }
                if lines.is_empty() {
                    "no operations".into()
                } else {
                    lines.join("\n")
                }
            });
            Ok(0)
        }
        OperationCommand::Run {
            name,
            params,
            reason,
            dry_run,
            no_wait,
        } => {
            let mut map = BTreeMap::new();
            for p in params {
                let (k, v) = p
                    .split_once('=')
                    .ok_or_else(|| anyhow!("--param `{p}` must be NAME=VALUE"))?;
                if map.insert(k.to_string(), v.to_string()).is_some() {
                    bail!("--param {k} is given twice");
                }
            }
            if name.is_empty()
                || !name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
            {
                bail!("`{name}` is not an operation name (see `airlock operation list`)");
            }
            let resp = c.stream(
                "POST",
                &format!("/api/v1/operations/{name}/runs"),
                Some(&json!({"params": map, "reason": reason, "attach": !no_wait, "dry_run": dry_run})),
            )?;
            handle_created(c, out, resp, no_wait)
        }
    }
}

/// `airlock run …`
pub fn run(c: &Client, out: Output, cmd: RunCommand) -> Result<i32> {
    match cmd {
        RunCommand::Show { id } => {
            let v: RunView = c.get_as(&format!("/api/v1/runs/{}", run_path_id(&id)?))?;
            emit_as(out, &v, run_detail);
        }
        RunCommand::List {
            state,
            mine,
            to_review,
        } => {
            let mut q = vec![];
            if let Some(st) = state {
                if !st.bytes().all(|b| b.is_ascii_lowercase() || b == b'_') {
                    bail!("--state must be one of pending, approved, running, succeeded, failed, timed_out, denied, lapsed, rate_limited");
                }
                q.push(format!("state={st}"));
            }
            if mine {
                q.push("mine=true".into());
            }
            if to_review {
                q.push("to_review=true".into());
            }
            let v: Vec<RunView> = c.get_as(&format!("/api/v1/runs?{}", q.join("&")))?;
            emit_as(out, &v, |v| run_list(v));
        }
        RunCommand::Transcript { id } => {
            let mut body = c
                .stream(
                    "GET",
                    &format!("/api/v1/runs/{}/transcript", run_path_id(&id)?),
                    None,
                )?
                .into_reader();
            let mut buf = vec![0u8; 64 * 1024];
            let mut stdout = std::io::stdout().lock();
            loop {
                let n = body.read(&mut buf)?;
                if n == 0 {
                    break;
                }
                write_all(&mut stdout, &buf[..n]);
            }
        }
        RunCommand::Follow { id } => return follow(c, out, run_path_id(&id)?),
        RunCommand::Cancel { id, comment } => {
            let v: RunView = c.post_as(
                &format!("/api/v1/runs/{}/cancel", run_path_id(&id)?),
                &json!({"comment": comment}),
            )?;
            emit_as(out, &v, run_detail);
        }
    }
    Ok(0)
}

/// `airlock review RUN_ID --approve|--deny`.
pub fn review(
    c: &Client,
    out: Output,
    id: &str,
    decision: &str,
    comment: Option<String>,
) -> Result<i32> {
    let v: RunView = c.post_as(
        &format!("/api/v1/runs/{}/reviews", run_path_id(id)?),
        &json!({"decision": decision, "comment": comment}),
    )?;
    emit_as(out, &v, run_detail);
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(v: Value) -> RunView {
        serde_json::from_value(v).unwrap()
    }

    fn sample() -> Value {
        json!({
            "id": "run_abcdefgh", "tool": "kubectl",
            "argv": ["/usr/bin/kubectl", "delete", "pod x"], "operation": null,
            "params": {"ns": "payments"}, "requester": "alice", "reason": "INC-1",
            "state": "failed", "detached": false, "rule": "rule 2",
            "approvals": {"count": 1, "reviewers": ["sre"]}, "exit_code": 3,
            "started_at": "2026-12-03T10:00:00Z", "finished_at": null,
            "transcript_sha256": "ab", "transcript_bytes": 10, "output_bytes": 10,
            "transcript_truncated": true,
            "dry_run": {"argv": ["/usr/bin/kubectl", "get"], "exit_code": null,
                        "output": "a\nb\n", "output_sha256": "cd", "truncated": false, "error": null},
            "error": "exit 3", "next_allowed_at": null, "lapses_at": null,
            "reviews": [{"reviewer": "bob", "decision": "approve", "comment": "ok",
                         "at": "2026-12-03T10:01:00Z"}],
            "created_at": "2026-12-03T09:59:00Z", "updated_at": "2026-12-03T10:02:00Z",
        })
    }

    #[test]
    fn a_run_detail_reads_as_before() {
        let want = [
            "run_abcdefgh  failed        by alice  /usr/bin/kubectl delete \"pod x\"",
            "  argv: /usr/bin/kubectl delete \"pod x\"",
            "  params: ns=payments",
            "  rule: rule 2",
            "  reason: INC-1",
            "  approvals: 1 of [\"sre\"]",
            "  review: bob approve at 2026-12-03T10:01:00Z — ok",
            "  dry run: /usr/bin/kubectl get (exit null)",
            "    | a",
            "    | b",
            "  started: 2026-12-03T10:00:00Z",
            "  exit code: 3",
            "  transcript: 10 bytes, sha256 ab (truncated)",
            "  error: exit 3",
        ]
        .join("\n");
        assert_eq!(run_detail(&run(sample())), want);
    }

    #[test]
    fn exit_codes_follow_the_run() {
        let mut v = sample();
        assert_eq!(exit_code_of(&run(v.clone())), 3);
        v["exit_code"] = json!(-9);
        assert_eq!(exit_code_of(&run(v.clone())), 1);
        v["state"] = json!("timed_out");
        assert_eq!(exit_code_of(&run(v.clone())), EXIT_TIMED_OUT);
        v["state"] = json!("succeeded");
        assert_eq!(exit_code_of(&run(v)), 0);
    }

    #[test]
    fn json_output_is_the_answer_as_it_came() {
        // `--output json` re-serializes the view: same fields, same order.
        let v = sample();
        let text = serde_json::to_string(&run(v.clone())).unwrap();
        assert_eq!(text, v.to_string());
    }
}
