//! SSH through the gateway with the stock OpenSSH client and a real sshd:
//! `ssh -o ProxyCommand='airlock connect ID --stdio' host` logs in with a
//! certificate the server signs for the session (the person holds nothing),
//! exec keeps its exit status, a PTY shell is recorded as asciicast v2 that
//! `airlock session play` replays, an unknown host key is refused, and a
//! running `sleep 100` is cut at `not_after` and on revoke.

use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use sha2::{Digest, Sha256};

use super::gateway::{ended_session, grant, rfc3339, sessions};
use super::ssh::sshd;
use crate::kit::*;

/// The server with three gateway entitlements on sshd: one it accepts, one
/// for a principal it does not, and one through a provider whose
/// known_hosts holds another key.
fn start(sshd: &sshd::Sshd, ca_private: &str) -> Server {
    let mut setup = Setup::new(Db::Sqlite);
    let port = sshd.port();
    let login = sshd.user();
    setup.extra = r#"
[providers.ssh-gw]
kind = "ssh"
ca_key = "ssh_ca"
known_hosts = "known_hosts"

[providers.ssh-wrong]
kind = "ssh"
ca_key = "ssh_ca"
known_hosts = "known_hosts_wrong"
"#
    .into();
    for (name, provider, principal) in [
        ("web-shell", "ssh-gw", login),
        ("web-shell-nobody", "ssh-gw", "nobody"),
        ("web-shell-wrong-key", "ssh-wrong", login),
    ] {
        setup.extra.push_str(&format!(
            r#"
[[entitlement]]
name = "{name}"
provider = "{provider}"
principals = ["{principal}"]
target_host = "127.0.0.1:{port}"
access = "gateway"
max_duration = "1h"
approvals = {{ count = 1, reviewers = ["payments-eng"] }}
"#
        ));
    }
    let other = sshd::TempDir::new("other-host-key").unwrap();
    let other_key = sshd::UserKey::generate(other.path(), "host", "ed25519").unwrap();
    let wrong = format!("[127.0.0.1]:{port} {}\n", other_key.public_line);
    let right = sshd.known_hosts_line().unwrap();
    Server::start_with_files(
        setup,
        &[
            ("ssh_ca", ca_private),
            ("known_hosts", &right),
            ("known_hosts_wrong", &wrong),
        ],
    )
}

/// A CA, an sshd trusting it that accepts the login name as the principal
/// (as an account's AuthorizedPrincipalsFile would), and the server.
fn setup() -> (sshd::TempDir, sshd::Sshd, Server) {
    let keys = sshd::TempDir::new("gw-ca").unwrap();
    // Made by ssh-keygen, so sshd can trust it before the server starts.
    let ca = sshd::UserKey::generate(keys.path(), "ca", "ed25519").unwrap();
    let user = sshd::current_user().unwrap();
    let sshd = sshd::Sshd::start(&ca.public_line, &[&user]).unwrap();
    let srv = start(&sshd, &std::fs::read_to_string(&ca.private).unwrap());
    (keys, sshd, srv)
}

/// The stock OpenSSH client through `airlock connect ID --stdio`.
fn ssh_command(srv: &Server, token: &str, id: &str, args: &[&str]) -> Command {
    let mut c = Command::new("ssh");
    // ssh takes the first value of an option: a test may pass its own LogLevel.
    c.args(args.iter().take_while(|a| a.starts_with("-oLogLevel")))
        .args(["-o", "LogLevel=ERROR"])
        .arg("-F")
        .arg("/dev/null")
        .arg("-o")
        .arg(format!("ProxyCommand={BIN} connect {id} --stdio"))
        .args(sshd::CLIENT_OPTIONS)
        .args(args.iter().skip_while(|a| a.starts_with("-oLogLevel")))
        .env("AIRLOCK_ADDR", &srv.addr)
        .env("AIRLOCK_TOKEN", token)
        .env_remove("AIRLOCK_CONFIG");
    c
}

fn ssh(srv: &Server, token: &str, id: &str, args: &[&str], stdin: &str) -> Output {
    use std::io::Write;
    let mut child = ssh_command(srv, token, id, args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run ssh");
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin.as_bytes()).unwrap();
    // A shell reads its commands before stdin ends.
    std::thread::sleep(Duration::from_millis(300));
    drop(input);
    wait_child(child, 30).0
}

fn spawn_ssh(srv: &Server, token: &str, id: &str, args: &[&str]) -> Child {
    ssh_command(srv, token, id, args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run ssh")
}

fn wait_child(mut child: Child, secs: u64) -> (Output, Duration) {
    let t = Instant::now();
    let deadline = t + Duration::from_secs(secs);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "ssh did not end within {secs} s: {} / {}",
                text(&out.stdout),
                text(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    (child.wait_with_output().unwrap(), t.elapsed())
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn ssh_through_the_gateway_runs_commands_and_shells_with_a_certificate_nobody_holds_and_records_the_terminal(
) {
    let (keys, sshd, mut srv) = setup();
    let (alice, bob, carol) = (srv.token("alice"), srv.token("bob"), srv.token("carol"));
    let id = grant(&srv, &alice, &bob, "web-shell", "10m");

    // Nothing to hand out: credentials are refused, connect is the way.
    let pubkey = sshd::UserKey::generate(keys.path(), "alice", "ed25519").unwrap();
    let refused = srv.cli(
        &alice,
        &[
            "credentials",
            &id,
            "--public-key",
            pubkey.private.with_extension("pub").to_str().unwrap(),
        ],
    );
    assert!(!refused.status.success());
    assert!(
        stderr(&refused).contains("airlock connect"),
        "{}",
        stderr(&refused)
    );

    // exec: output, stderr and the exit status come back; any login name
    // becomes the only principal.
    let out = ssh(
        &srv,
        &alice,
        &id,
        &[
            "whoever@gateway",
            "echo hello-$((6*7)); echo on-stderr >&2; exit 3",
        ],
        "",
    );
    assert_eq!(
        out.status.code(),
        Some(3),
        "{} / {}\n{}\n{}",
        text(&out.stdout),
        text(&out.stderr),
        srv.log_text(),
        sshd.log_tail(20)
    );
    assert_eq!(text(&out.stdout), "hello-42\n");
    assert!(
        text(&out.stderr).contains("on-stderr"),
        "{}",
        text(&out.stderr)
    );
    // sshd saw the gateway's certificate for this grant, not a key of alice's.
    let log = sshd.log();
    assert!(
        log.contains(&format!("airlock:alice:{id}:gateway")),
        "sshd logs the certificate's key id: {}",
        sshd.log_tail(20)
    );

    // A shell with a PTY; what the terminal showed is recorded.
    let out = ssh(
        &srv,
        &alice,
        &id,
        &["-tt", "gateway"],
        "echo marker-$((7*6))\nexit 0\n",
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("marker-42"),
        "{}",
        text(&out.stdout)
    );

    // The session ends on the server once the tunnel has closed behind ssh.
    let deadline = Instant::now() + Duration::from_secs(10);
    let list = loop {
        let list = sessions(&srv, &alice, &id);
        if list.iter().all(|s| !s["ended_at"].is_null()) {
            break list;
        }
        assert!(Instant::now() < deadline, "sessions still open: {list:?}");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(list.len(), 2, "{list:?}");
    for s in &list {
        assert_eq!(s["kind"], "ssh");
        assert_eq!(s["end_reason"], "client_closed", "{s}");
        assert!(s["bytes_down"].as_u64().unwrap() > 0, "{s}");
    }
    let shell = list
        .iter()
        .find(|s| s["bytes_up"].as_u64().unwrap() > 0)
        .expect("the shell session counted what was typed");
    let sid = shell["id"].as_str().unwrap();

    // The recording: asciicast v2 over HTTP, raw with --output json, hashed
    // in session.ended.
    let (status, ctype, _) = srv.http(
        "GET",
        &format!("/api/v1/sessions/{sid}/recording"),
        Some(&alice),
        None,
    );
    assert_eq!((status, ctype.as_str()), (200, "application/x-asciicast"));
    let raw = srv.cli(&alice, &["session", "play", sid, "--output", "json"]);
    assert!(raw.status.success(), "{}", stderr(&raw));
    let cast = text(&raw.stdout);
    let mut lines = cast.lines();
    let header: Value = serde_json::from_str(lines.next().unwrap()).unwrap();
    assert_eq!(header["version"], 2, "{header}");
    assert_eq!(
        (header["width"].as_u64(), header["height"].as_u64()),
        (Some(80), Some(24))
    );
    let events: Vec<Value> = lines.map(|l| serde_json::from_str(l).unwrap()).collect();
    let shown: String = events
        .iter()
        .filter(|e| e[1] == "o")
        .map(|e| e[2].as_str().unwrap())
        .collect();
    assert!(shown.contains("marker-42"), "{shown}");
    let times: Vec<f64> = events.iter().map(|e| e[0].as_f64().unwrap()).collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "{times:?}");
    let export = srv.cli(&srv.admin, &["audit", "export"]);
    let ended: Value = text(&export.stdout)
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .find(|e| e["kind"] == "session.ended" && e["subject"] == format!("session:{sid}"))
        .unwrap();
    assert_eq!(
        ended["data"]["recording_sha256"],
        hex::encode(Sha256::digest(&raw.stdout))
    );
    // `session play` replays what the terminal showed.
    let played = srv.cli(&bob, &["session", "play", sid, "--speed", "1000"]);
    assert!(played.status.success(), "{}", stderr(&played));
    assert!(text(&played.stdout).contains("marker-42"));
    // The web UI shows the terminal as text, and its player replays it.
    let mut web = crate::web_http::WebClient::new(&srv);
    web.sign_in(&bob);
    let page = web.get(&format!("/ui/sessions/{sid}"));
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(page.body.contains("id=\"terminal\""), "{}", page.body);
    assert!(page.body.contains("marker-42"), "{}", page.body);
    let driver = crate::webdriver::Chromedriver::start();
    let browser = crate::webdriver::Browser::new(&driver);
    crate::web::sign_in(&browser, &srv, &bob);
    browser.goto(&format!("{}/ui/sessions/{sid}", srv.addr));
    browser.find("#speed").send_keys("16");
    browser.find("#play").click();
    browser.wait_for("#terminal[data-played=done]", Duration::from_secs(20));
    let shown = browser.find("#terminal").text();
    assert!(shown.contains("marker-42"), "{shown}");
    assert!(!shown.contains('\u{1b}'), "escapes are dropped: {shown:?}");
    browser.screenshot("ssh-session-player");

    let bad = srv.cli(&bob, &["session", "play", sid, "--speed", "0"]);
    assert!(stderr(&bad).contains("--speed"), "{}", stderr(&bad));

    // Only the requester connects.
    let out = ssh(&srv, &carol, &id, &["gateway", "true"], "");
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("HTTP 404"),
        "{}",
        text(&out.stderr)
    );
    let out = ssh(&srv, &bob, &id, &["gateway", "true"], "");
    assert!(
        text(&out.stderr).contains("HTTP 403"),
        "{}",
        text(&out.stderr)
    );

    // `airlock doctor` logs in as the gateway would, per principal, and
    // says what to fix.
    let out = Command::new(BIN)
        .args(["doctor", "--output", "json", "--config"])
        .arg(srv.path("airlock.toml"))
        .output()
        .unwrap();
    let report: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}{}", text(&out.stdout), stderr(&out)));
    let findings: Vec<Value> = report["providers"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["findings"].as_array().cloned().unwrap_or_default())
        .filter(|f| f["check"].as_str().unwrap().starts_with("gateway login"))
        .collect();
    let find = |entitlement: &str| {
        findings
            .iter()
            .find(|f| {
                f["check"]
                    .as_str()
                    .unwrap()
                    .ends_with(&format!("({entitlement})"))
            })
            .unwrap_or_else(|| panic!("no finding for {entitlement}: {findings:?}"))
            .clone()
    };
    assert_eq!(find("web-shell")["ok"], true, "{findings:?}");
    let nobody = find("web-shell-nobody");
    assert_eq!(nobody["ok"], false);
    assert!(
        nobody["fix"]
            .as_str()
            .unwrap()
            .contains("AuthorizedPrincipalsFile"),
        "{nobody}"
    );
    let wrong_key = find("web-shell-wrong-key");
    assert_eq!(wrong_key["ok"], false);
    assert!(
        wrong_key["detail"]
            .as_str()
            .unwrap()
            .contains("does not match")
            && wrong_key["fix"].as_str().unwrap().contains("ssh-keyscan"),
        "{wrong_key}"
    );
    assert_eq!(
        out.status.code(),
        Some(1),
        "doctor fails while anything is missing"
    );

    // A target whose host key is not the one in known_hosts is refused.
    let wrong = grant(&srv, &alice, &bob, "web-shell-wrong-key", "10m");
    let out = ssh(
        &srv,
        &alice,
        &wrong,
        // OpenSSH says why a channel failed at level INFO.
        &["-oLogLevel=INFO", "gateway", "echo should-not-run"],
        "",
    );
    assert!(!out.status.success());
    assert!(!text(&out.stdout).contains("should-not-run"));
    assert!(
        text(&out.stderr).contains("does not match"),
        "{:?}: {}\n{}",
        out.status,
        text(&out.stderr),
        srv.log_text()
    );
    srv.kill9();
}

#[test]
fn a_running_ssh_command_is_cut_at_not_after_and_on_revoke() {
    let (_keys, _sshd, mut srv) = setup();
    let (alice, bob) = (srv.token("alice"), srv.token("bob"));

    let id = grant(&srv, &alice, &bob, "web-shell", "4s");
    let not_after = rfc3339(&srv.json(&alice, &["show", &id])["not_after"]);
    let child = spawn_ssh(&srv, &alice, &id, &["gateway", "sleep 100"]);
    let (out, _) = wait_child(child, 20);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("the grant ended (not_after)"),
        "{}",
        text(&out.stderr)
    );
    let s = ended_session(&srv, &alice, &id, 10);
    assert_eq!(s["end_reason"], "not_after", "{s}");
    let late = rfc3339(&s["ended_at"]) - not_after;
    assert!(
        late < time::Duration::seconds(1),
        "cut {late} after not_after"
    );

    let id = grant(&srv, &alice, &bob, "web-shell", "1h");
    let child = spawn_ssh(&srv, &alice, &id, &["gateway", "sleep 100"]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while sessions(&srv, &alice, &id).is_empty() {
        assert!(Instant::now() < deadline, "no session");
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(300));
    let at = time::OffsetDateTime::now_utc();
    srv.json(&bob, &["revoke", &id]);
    let (out, _) = wait_child(child, 10);
    assert!(
        text(&out.stderr).contains("revoked"),
        "{}",
        text(&out.stderr)
    );
    let s = ended_session(&srv, &alice, &id, 10);
    assert_eq!(s["end_reason"], "revoked", "{s}");
    let took = rfc3339(&s["ended_at"]) - at;
    assert!(took < time::Duration::seconds(1), "cut after {took}");
    srv.kill9();
}
