//! The tool-proxy commands: `airlock exec`, `airlock operation …`,
//! `airlock run …`. Output of a run streams live (stdout to stdout, stderr to
//! stderr) and `airlock exec` exits with the tool's exit code.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::time::{Duration, Instant};

use airlock_api::stream::{self, Kind};
use anyhow::{anyhow, bail, Context, Result};
use clap::Subcommand;
use serde_json::{json, Value};

use crate::client::Client;
use crate::{emit, Output};

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

/// An argv as a person would type it (quoted where needed, escapes visible).
pub fn argv_display(v: &Value) -> String {
    v.as_array()
        .map(|a| {
            a.iter()
                .map(|x| {
                    let x = x.as_str().unwrap_or("");
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
        })
        .unwrap_or_default()
}

/// One line for a run.
pub fn run_line(r: &Value) -> String {
    let what = match r.get("operation").and_then(Value::as_str) {
        Some(op) => format!("operation {op}"),
        None => argv_display(&r["argv"]),
    };
    format!(
        "{}  {:<12}  by {}  {what}",
        s(r, "id"),
        s(r, "state"),
        s(r, "requester")
    )
}

/// A detailed view of one run.
pub fn run_detail(r: &Value) -> String {
    let mut out = run_line(r);
    out.push_str(&format!("\n  argv: {}", argv_display(&r["argv"])));
    if let Some(p) = r.get("params").and_then(Value::as_object) {
        let ps: Vec<String> = p
            .iter()
            .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
            .collect();
        out.push_str(&format!("\n  params: {}", ps.join(" ")));
    }
    out.push_str(&format!(
        "\n  rule: {}\n  reason: {}",
        s(r, "rule"),
        s(r, "reason")
    ));
    if r["approvals"]["count"].as_u64().unwrap_or(0) > 0 {
        out.push_str(&format!(
            "\n  approvals: {} of {}",
            r["approvals"]["count"], r["approvals"]["reviewers"]
        ));
    }
    for v in r["reviews"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "\n  review: {} {} at {}{}",
            s(v, "reviewer"),
            s(v, "decision"),
            s(v, "at"),
            v.get("comment")
                .and_then(Value::as_str)
                .map(|c| format!(" — {c}"))
                .unwrap_or_default()
        ));
    }
    if let Some(d) = r.get("dry_run").filter(|d| d.is_object()) {
        out.push_str(&format!(
            "\n  dry run: {} (exit {})\n{}",
            argv_display(&d["argv"]),
            d["exit_code"],
            indent(s(d, "output"))
        ));
    }
    for (k, label) in [
        ("started_at", "started"),
        ("finished_at", "finished"),
        ("next_allowed_at", "next allowed"),
        ("lapses_at", "lapses"),
    ] {
        if let Some(t) = r.get(k).and_then(Value::as_str) {
            out.push_str(&format!("\n  {label}: {t}"));
        }
    }
    if !r["exit_code"].is_null() {
        out.push_str(&format!("\n  exit code: {}", r["exit_code"]));
    }
    if let Some(h) = r.get("transcript_sha256").and_then(Value::as_str) {
        out.push_str(&format!(
            "\n  transcript: {} bytes, sha256 {h}{}",
            r["transcript_bytes"],
            if r["transcript_truncated"].as_bool() == Some(true) {
                " (truncated)"
            } else {
                ""
            }
        ));
    }
    if let Some(e) = r.get("error").and_then(Value::as_str) {
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
pub fn exit_code_of(run: &Value) -> i32 {
    match s(run, "state") {
        "succeeded" => 0,
        "timed_out" => EXIT_TIMED_OUT,
        "failed" => run["exit_code"]
            .as_i64()
            .filter(|c| *c != 0)
            .map(|c| c.clamp(1, 255) as i32)
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
fn follow_stream(resp: ureq::Response, out: Output) -> Result<Value> {
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
        let json = |r: &mut dyn Read| -> Result<Value> {
            let mut payload = vec![0u8; len];
            r.read_exact(&mut payload)
                .context("the output stream was cut")?;
            Ok(serde_json::from_slice(&payload).unwrap_or(Value::Null))
        };
        match Kind::from_u8(kind) {
            Some(Kind::Start) => run_id = s(&json(&mut r)?, "id").to_string(),
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
            Some(Kind::End) => return json(&mut r),
            Some(Kind::Error) => {
                let v = json(&mut r)?;
                bail!(
                    "{} (run {run_id}; see `airlock run show {run_id}`)",
                    v["detail"]
                        .as_str()
                        .unwrap_or("the server could not follow the run")
                );
            }
            None => bail!("unknown frame kind {kind} from the server; upgrade airlock"),
        }
    }
}

/// Ends a streamed run: a summary line unless it simply succeeded.
fn finish(out: Output, run: &Value) -> i32 {
    match out {
        Output::Json => emit(out, run, run_detail),
        Output::Text => {
            if s(run, "state") != "succeeded" {
                eprintln!(
                    "airlock: run {} {}{}",
                    s(run, "id"),
                    s(run, "state"),
                    match (
                        run["exit_code"].as_i64(),
                        run.get("error").and_then(Value::as_str)
                    ) {
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
    let v: Value = serde_json::from_str(&resp.into_string()?)?;
    if v.get("id").is_none() {
        // A dry run only: what would run and what the dry run said.
        emit(out, &v, |v| {
            let d = &v["dry_run"];
            format!(
                "would run: {}\ndry run:   {} (exit {})\n{}",
                argv_display(&v["argv"]),
                argv_display(&d["argv"]),
                d["exit_code"],
                indent(s(d, "output"))
            )
        });
        return Ok(if v["dry_run"]["exit_code"] == json!(0) {
            0
        } else {
            1
        });
    }
    if no_wait || s(&v, "state") != "pending" {
        emit(out, &v, run_detail);
        return Ok(match s(&v, "state") {
            "pending" | "running" | "approved" | "succeeded" => 0,
            _ => exit_code_of(&v),
        });
    }
    wait_and_stream(c, out, v)
}

/// Waits (with a progress line) until a pending run is decided, then starts
/// it here and streams its output.
fn wait_and_stream(c: &Client, out: Output, run: Value) -> Result<i32> {
    let id = s(&run, "id").to_string();
    if out == Output::Text {
        if let Some(d) = run.get("dry_run").filter(|d| d.is_object()) {
            eprintln!(
                "dry run: {} (exit {})\n{}",
                argv_display(&d["argv"]),
                d["exit_code"],
                indent(s(d, "output"))
            );
        }
        eprintln!(
            "run {id} needs approval ({} of {}); ask a reviewer: airlock review {id} --approve",
            run["approvals"]["count"], run["approvals"]["reviewers"]
        );
    }
    let started = Instant::now();
    let spinner = ['|', '/', '-', '\\'];
    let mut cur = run;
    let mut i = 0;
    while s(&cur, "state") == "pending" {
        if out == Output::Text {
            let have = cur["reviews"].as_array().map(|a| a.len()).unwrap_or(0);
            eprint!(
                "\r{} {id} pending, {have} review(s), waiting {}s ",
                spinner[i % 4],
                started.elapsed().as_secs()
            );
        }
        i += 1;
        std::thread::sleep(Duration::from_millis(500));
        cur = c.get(&format!("/api/v1/runs/{id}"))?;
    }
    if out == Output::Text {
        eprintln!();
    }
    match s(&cur, "state") {
        "approved" => {}
        "running" => return follow(c, out, &id),
        _ => {
            emit(out, &cur, run_detail);
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
            let v: Value = serde_json::from_str(&resp.into_string()?)?;
            emit(out, &v, run_detail);
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
            let v = c.get(&format!("/api/v1/runs/{}", run_path_id(&id)?))?;
            emit(out, &v, run_detail);
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
            let v = c.get(&format!("/api/v1/runs?{}", q.join("&")))?;
            emit(out, &v, |v| {
                let rows: Vec<String> = v
                    .as_array()
                    .map(|a| a.iter().map(run_line).collect())
                    .unwrap_or_default();
                if rows.is_empty() {
                    "no runs".into()
                } else {
                    rows.join("\n")
                }
            });
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
            let v = c.post(
                &format!("/api/v1/runs/{}/cancel", run_path_id(&id)?),
                &json!({"comment": comment}),
            )?;
            emit(out, &v, run_detail);
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
    let v = c.post(
        &format!("/api/v1/runs/{}/reviews", run_path_id(id)?),
        &json!({"decision": decision, "comment": comment}),
    )?;
    emit(out, &v, run_detail);
    Ok(0)
}
