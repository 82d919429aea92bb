//! The application without HTTP: a service context on a throwaway SQLite
//! store, driven the way the API, the web UI and Slack drive it.

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::sync::Arc;

use airlock_core::request::{RequestState, ReviewDecision};
use airlock_core::{Principal, UserName};
use airlock_providers::ValidatedConfig;
use airlock_service::surface::Surface;
use airlock_service::{lifecycle, queue, ServeOptions, Service, ServiceError};

/// A provider whose programs exist and do nothing: nothing here applies grants.
const NOOP: &str = "#!/bin/sh\nexit 0\n";

fn catalog(prog: &str) -> String {
    format!(
        r#"
[[user]]
name = "alice"

[[user]]
name = "bob"

[[user]]
name = "carol"

[[group]]
name = "payments-eng"
members = ["alice", "bob"]

[providers.legacy]
kind = "command"
grant = ["{prog}"]
revoke = ["{prog}"]

[[entitlement]]
name = "legacy-admin"
provider = "legacy"
role = "admin"
max_duration = "1h"
approvals = {{ count = 1, reviewers = ["payments-eng"] }}
"#
    )
}

fn service() -> (Arc<Service>, PathBuf) {
    let dir = std::env::temp_dir().join(format!(
        "airlock-service-test-{}-{}",
        std::process::id(),
        rand_suffix()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let prog = dir.join("noop.sh");
    std::fs::write(&prog, NOOP).unwrap();
    std::fs::set_permissions(&prog, std::fs::Permissions::from_mode(0o755)).unwrap();
    let config = ValidatedConfig::parse(&catalog(prog.to_str().unwrap())).unwrap();
    let svc = Service::new(ServeOptions {
        config,
        policy_text: None,
        data_dir: dir.clone(),
        config_dir: dir.clone(),
        database_url: format!("sqlite://{}", dir.join("airlock.db").display()),
        admin_token_hashes: vec![],
        replica_id: "service-test".into(),
    })
    .unwrap();
    (svc, dir)
}

fn rand_suffix() -> u64 {
    use std::time::{SystemTime, UNIX_EPOCH};
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .subsec_nanos() as u64
}

fn who(svc: &Service, name: &str) -> Principal {
    svc.config
        .principal(UserName::parse(name).unwrap(), &[], false)
}

#[tokio::test]
async fn a_request_is_reviewed_through_the_service_without_a_listener() {
    let (svc, dir) = service();
    let (alice, bob, carol) = (who(&svc, "alice"), who(&svc, "bob"), who(&svc, "carol"));

    let r = lifecycle::create(
        &svc,
        &alice,
        "legacy-admin",
        "30m",
        "INC-1 fix",
        false,
        None,
    )
    .await
    .unwrap();
    assert_eq!(r.state, RequestState::Pending);

    // Only a named reviewer sees it waiting, and never its requester.
    let q = queue::for_reviewer(&svc, &bob, 50).await.unwrap();
    assert_eq!(q.pending.iter().map(|r| &r.id).collect::<Vec<_>>(), [&r.id]);
    assert!(queue::for_reviewer(&svc, &alice, 50)
        .await
        .unwrap()
        .is_empty());
    assert!(queue::for_reviewer(&svc, &carol, 50)
        .await
        .unwrap()
        .is_empty());

    // Self-review and an outsider's review are refused with a domain error, not a status.
    let own = lifecycle::review(
        &svc,
        &alice,
        r.id.clone(),
        ReviewDecision::Approve,
        None,
        Surface::Api,
    )
    .await
    .unwrap_err();
    assert!(
        matches!(
            own,
            ServiceError::Domain(airlock_core::Error::Forbidden { .. })
        ),
        "{own:?}"
    );
    assert_eq!(own.answer().status, 403);
    let outsider = lifecycle::review(
        &svc,
        &carol,
        r.id.clone(),
        ReviewDecision::Approve,
        None,
        Surface::Api,
    )
    .await
    .unwrap_err();
    assert_eq!(outsider.answer().status, 403, "{outsider}");

    let approved = lifecycle::review(
        &svc,
        &bob,
        r.id.clone(),
        ReviewDecision::Approve,
        None,
        Surface::Api,
    )
    .await
    .unwrap();
    assert_eq!(approved.state, RequestState::Approved);
    assert!(queue::for_reviewer(&svc, &bob, 50)
        .await
        .unwrap()
        .is_empty());

    // A second decision on a decided request is a conflict the caller can read.
    let again = lifecycle::review(
        &svc,
        &bob,
        r.id.clone(),
        ReviewDecision::Deny,
        None,
        Surface::Api,
    )
    .await
    .unwrap_err();
    assert!(again.is_conflict(), "{again:?}");
    assert_eq!(again.answer().status, 409);
    let _ = std::fs::remove_dir_all(dir);
}
