//! Review emails through a real SMTP server (aiosmtpd started by
//! scripts/setup/smtp.sh, STARTTLS + AUTH required): who receives them
//! (service address, reviewers' catalog emails) and what they say.

use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::Value;

use crate::both_stores;
use crate::kit::*;

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: run the email tests through ./scripts/test, which starts a real SMTP server")
    })
}

/// One stored message: envelope, whether it came over TLS with AUTH, and its
/// headers (unfolded) and decoded body.
struct Mail {
    rcpt: Vec<String>,
    mail_from: String,
    tls: bool,
    auth_user: Option<String>,
    headers: String,
    body: String,
}

fn mails() -> Vec<Mail> {
    let dir = env("AIRLOCK_TEST_SMTP_DIR");
    let mut names: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    names.sort();
    names
        .iter()
        .map(|p| {
            let v: Value = serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap();
            let data = v["data"].as_str().unwrap().replace("\r\n", "\n");
            let (headers, raw) = data.split_once("\n\n").unwrap_or((&data, ""));
            let headers = headers.replace("\n ", " ").replace("\n\t", " ");
            let lower = headers.to_lowercase();
            let body = if lower.contains("content-transfer-encoding: base64") {
                let b64: String = raw.split_whitespace().collect();
                String::from_utf8(
                    base64::engine::general_purpose::STANDARD
                        .decode(b64)
                        .unwrap(),
                )
                .unwrap()
            } else if lower.contains("content-transfer-encoding: quoted-printable") {
                quoted_printable(raw)
            } else {
                raw.to_string()
            };
            Mail {
                rcpt: v["rcpt_tos"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|r| r.as_str().unwrap().to_string())
                    .collect(),
                mail_from: v["mail_from"].as_str().unwrap().to_string(),
                tls: v["tls"] == true,
                auth_user: v["auth_user"].as_str().map(str::to_string),
                headers,
                body,
            }
        })
        .collect()
}

fn quoted_printable(s: &str) -> String {
    let s = s.replace("=\n", "");
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'=' && i + 2 < b.len() {
            let hex = std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("zz");
            if let Ok(x) = u8::from_str_radix(hex, 16) {
                out.push(x);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).to_string()
}

/// Waits for the one message whose body mentions `id`.
fn mail_about(id: &str) -> Mail {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let mut found: Vec<Mail> = mails()
            .into_iter()
            .filter(|m| m.body.contains(id))
            .collect();
        if let Some(m) = found.pop() {
            assert!(
                found.is_empty(),
                "one email per request, got {}",
                found.len() + 1
            );
            return m;
        }
        assert!(Instant::now() < deadline, "no email about {id} arrived");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn server(db: Db) -> Server {
    let (host, port) = env("AIRLOCK_TEST_SMTP_ADDR")
        .split_once(':')
        .map(|(h, p)| (h.to_string(), p.to_string()))
        .unwrap();
    let mut setup = Setup::new(db);
    setup.server_extra = "public_url = \"https://airlock.example/\"\n".into();
    setup.extra = format!(
        r#"
[[user]]
name = "bob"
email = "bob@example.com"

[[user]]
name = "carol"
email = "carol@example.com"

[[service]]
name = "payments"
owners = ["payments-eng"]
email = "payments-oncall@example.com"

[[service]]
name = "billing"
owners = ["carol"]

[[entitlement]]
name = "svc-write"
description = "Payments writes"
provider = "pg-main"
role = "{WRITER_ROLE}"
max_duration = "1h"
service = "payments"
approvals = {{ count = 1 }}

[[entitlement]]
name = "billing-write"
provider = "pg-main"
role = "{WRITER_ROLE}"
max_duration = "1h"
service = "billing"
approvals = {{ count = 1 }}

[[entitlement]]
name = "team-read"
provider = "pg-main"
role = "{WRITER_ROLE}"
max_duration = "1h"
approvals = {{ count = 1, reviewers = ["payments-eng", "carol"] }}

[[entitlement]]
name = "auto-read"
provider = "pg-main"
role = "{WRITER_ROLE}"
max_duration = "1h"
approvals = {{ count = 0 }}

[[tool]]
name = "echo"
path = "/bin/echo"
run_as = "server"

[[operation]]
name = "restart-payments"
description = "Rolling restart of the payments API"
tool = "echo"
run_as = "server"
args = ["restart", "{{deployment}}"]
service = "payments"
approvals = {{ count = 1 }}
[operation.params.deployment]
enum = ["payments-api"]

[notify.email]
host = "{host}"
port = {port}
security = "starttls"
username = "{user}"
password_file = "smtp.password"
ca_file = "{ca}"
from = "airlock@example.com"
to = ["fallback@example.com"]
"#,
        user = env("AIRLOCK_TEST_SMTP_USER"),
        ca = env("AIRLOCK_TEST_SMTP_CA"),
    );
    Server::start_with_files(
        setup,
        &[("smtp.password", &env("AIRLOCK_TEST_SMTP_PASSWORD"))],
    )
}

fn request(s: &Server, token: &str, ent: &str, reason: &str) -> String {
    id_of(&s.json(token, &["request", ent, "--for", "30m", "--reason", reason]))
}

both_stores!(
    reviewers_are_emailed_at_the_service_address_or_their_own,
    |db| {
        let s = server(db);
        let alice = s.token("alice");

        // A service with an address: only that address, over STARTTLS with AUTH.
        let id = request(&s, &alice, "svc-write", "CHG-77 rotate keys");
        let m = mail_about(&id);
        assert_eq!(m.rcpt, ["payments-oncall@example.com"]);
        assert_eq!(m.mail_from, "airlock@example.com");
        assert!(m.tls, "sent after STARTTLS");
        assert_eq!(
            m.auth_user.as_deref(),
            Some(env("AIRLOCK_TEST_SMTP_USER").as_str())
        );
        assert!(
            m.headers
                .contains("Subject: [airlock] alice requests svc-write for 30m"),
            "{}",
            m.headers
        );
        assert!(
            m.body
                .contains(&format!("https://airlock.example/ui/requests/{id}")),
            "{}",
            m.body
        );
        assert!(m.body.contains("CHG-77 rotate keys"), "{}", m.body);
        assert!(
            m.body.contains("svc-write (Payments writes)") && m.body.contains("30m"),
            "{}",
            m.body
        );
        assert!(!m.body.contains(&env("AIRLOCK_TEST_SMTP_PASSWORD")));

        // Reviewers named by group and by user: their catalog emails, never the requester's.
        let id = request(&s, &alice, "team-read", "look at INC-9");
        let mut rcpt = mail_about(&id).rcpt;
        rcpt.sort();
        assert_eq!(rcpt, ["bob@example.com", "carol@example.com"]);

        // A service without an address: its owners review, so they are emailed.
        let id = request(&s, &alice, "billing-write", "INC-10");
        assert_eq!(mail_about(&id).rcpt, ["carol@example.com"]);

        // Auto-approved: nobody to ask. Delivery is in order, so once the next
        // request's email is in, an email about the auto-approved one would be too.
        let auto = request(&s, &alice, "auto-read", "INC-11");
        let next = request(&s, &alice, "svc-write", "CHG-78");
        mail_about(&next);
        assert!(
            !mails().iter().any(|m| m.body.contains(&auto)),
            "no email for an auto-approved request"
        );
    }
);

#[test]
fn runs_awaiting_approval_email_the_owning_service() {
    let s = server(Db::Sqlite);
    let alice = s.token("alice");
    let run = s.json(
        &alice,
        &[
            "operation",
            "run",
            "restart-payments",
            "--param",
            "deployment=payments-api",
            "--reason",
            "CHG-90 stuck pods",
            "--no-wait",
        ],
    );
    assert_eq!(run["state"], "pending", "{run}");
    let id = id_of(&run);
    let m = mail_about(&id);
    assert_eq!(m.rcpt, ["payments-oncall@example.com"]);
    assert!(
        m.body
            .contains(&format!("https://airlock.example/ui/runs/{id}")),
        "{}",
        m.body
    );
    assert!(m.body.contains("CHG-90 stuck pods"), "{}", m.body);
    assert!(m.body.contains("restart-payments"), "{}", m.body);
}
