//! The GCP IAM provider through the real binary and CLI, against the local
//! emulation of getIamPolicy/setIamPolicy and the OAuth token endpoint
//! (no GCP can be reached here; the provider's code path is the production
//! one, only `endpoint` and the key's `token_uri` point at the emulation).

use std::time::Duration;

use airlock_emulators::gcp::GcpEmulator;
use time::OffsetDateTime;

use crate::kit::*;

const RESOURCE: &str = "projects/payments-prod";
const ROLE: &str = "roles/spanner.databaseUser";

#[test]
fn gcp_binding_is_conditional_and_ends_at_not_after_with_airlock_down() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let emu = rt.block_on(GcpEmulator::start());
    emu.create_resource(RESOURCE);
    let key = emu.create_service_account_key("airlock@payments-prod.iam.gserviceaccount.com");
    let mut setup = Setup::new(Db::Sqlite);
    setup.extra = format!(
        r#"
[providers.gcp-prod]
kind = "gcp-iam"
resource = "{RESOURCE}"
credentials = "sa.json"
endpoint = "{endpoint}"

[[entitlement]]
name = "payments-spanner-write"
provider = "gcp-prod"
role = "{ROLE}"
max_duration = "1h"
approvals = {{ count = 1, reviewers = ["payments-eng"] }}
"#,
        endpoint = emu.endpoint()
    );
    let mut s = Server::start_with_files(setup, &[("sa.json", &key.to_string())]);
    let (alice, bob, carol) = (s.token("alice"), s.token("bob"), s.token("carol"));

    // carol has no email: refused at request time, before any reviewer is asked.
    let out = s.cli(
        &carol,
        &[
            "request",
            "payments-spanner-write",
            "--for",
            "5m",
            "--reason",
            "x",
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("has none: add `email`"),
        "{}",
        stderr(&out)
    );

    let r = s.json(
        &alice,
        &[
            "request",
            "payments-spanner-write",
            "--for",
            "6s",
            "--reason",
            "CHG-3",
        ],
    );
    let id = id_of(&r);
    s.json(&bob, &["review", &id, "--approve"]);
    let r = s.wait_for(&alice, &id, 10, |r| r["state"] == "active");
    let member = "user:alice@example.com";
    assert!(emu.has_role(RESOURCE, member, ROLE, OffsetDateTime::now_utc()));
    let policy = serde_json::to_value(emu.policy(RESOURCE).unwrap()).unwrap();
    assert_eq!(policy["version"], 3, "{policy}");
    let binding = policy["bindings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["role"] == ROLE)
        .expect("binding")
        .clone();
    assert_eq!(binding["members"], serde_json::json!([member]));
    assert_eq!(binding["condition"]["title"], format!("airlock {id}"));
    let not_after = r["not_after"].as_str().unwrap();
    let expression = binding["condition"]["expression"].as_str().unwrap();
    assert!(
        expression.starts_with("request.time < timestamp(\"")
            && not_after.starts_with(&expression[26..45]),
        "{expression} vs {not_after}"
    );

    // airlock goes down; the binding stays, but its condition ends access.
    s.kill9();
    let end =
        OffsetDateTime::parse(not_after, &time::format_description::well_known::Rfc3339).unwrap();
    let wait = end - OffsetDateTime::now_utc() + time::Duration::seconds(1);
    if wait.is_positive() {
        std::thread::sleep(Duration::from_secs_f64(wait.as_seconds_f64()));
    }
    assert!(
        emu.policy(RESOURCE)
            .map(|p| serde_json::to_value(p).unwrap().to_string())
            .unwrap()
            .contains(&format!("airlock {id}")),
        "airlock was down, so nothing removed the binding"
    );
    assert!(!emu.has_role(RESOURCE, member, ROLE, OffsetDateTime::now_utc()));

    // Back up, the reconciler removes the expired binding.
    s.boot();
    s.wait_for(&alice, &id, 15, |r| {
        r["state"] == "expired" && r["grant"]["phase"] == "removed"
    });
    assert!(!serde_json::to_value(emu.policy(RESOURCE).unwrap())
        .unwrap()
        .to_string()
        .contains(&format!("airlock {id}")));
    drop(rt);
}
