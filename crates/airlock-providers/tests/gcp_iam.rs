//! The GCP IAM provider against the in-process emulation of Resource
//! Manager's IAM methods, Google's token endpoint and the metadata server
//! (`airlock_emulators::gcp`). Only the base URLs differ from production.
//! Each test starts its own emulation, so tests run in parallel.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use airlock_core::{EntitlementName, ProviderName, RequestId, UserName};
use airlock_emulators::gcp::{Binding, GcpEmulator, Policy};
use airlock_providers::gcp_iam::GcpIamProvider;
use airlock_providers::gcp_iam::{Config, Target};
use airlock_providers::{EntitlementTarget, ValidatedConfig};
use airlock_providers::{GrantSpec, Provider, ProviderContext, ProviderError};
use time::OffsetDateTime;

const PROJECT: &str = "projects/payments-prod";
const ROLE: &str = "roles/spanner.databaseUser";
const SA: &str = "airlock@payments-prod.iam.gserviceaccount.com";
const OWNER: &str = "user:owner@example.com";

/// A fresh temp folder for one test's config files.
fn temp_dir() -> PathBuf {
    static N: AtomicU64 = AtomicU64::new(0);
    let dir = std::env::temp_dir().join(format!(
        "airlock-gcp-test-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// One test's world: the emulation with a project owned by someone, and a key file for airlock's SA.
struct World {
    emu: GcpEmulator,
    dir: PathBuf,
    key: serde_json::Value,
}

impl World {
    async fn new() -> World {
        let emu = GcpEmulator::start().await;
        emu.seed_policy(
            PROJECT,
            Policy {
                bindings: vec![Binding::new("roles/owner", &[OWNER])],
                ..Default::default()
            },
        );
        let dir = temp_dir();
        let key = emu.create_service_account_key(SA);
        std::fs::write(dir.join("sa.json"), key.to_string()).unwrap();
        World { emu, dir, key }
    }

    fn config(&self, resource: &str) -> Config {
        Config {
            resource: resource.into(),
            credentials: Some("sa.json".into()),
            endpoint: Some(self.emu.endpoint().into()),
        }
    }

    fn build(&self, config: &Config) -> Result<GcpIamProvider, String> {
        GcpIamProvider::new(
            ProviderName::parse("gcp-prod").unwrap(),
            config,
            &ProviderContext {
                config_dir: self.dir.clone(),
                data_dir: self.dir.clone(),
            },
        )
        .map_err(|e| e.to_string())
    }

    fn provider(&self) -> GcpIamProvider {
        self.build(&self.config(PROJECT)).expect("provider builds")
    }

    fn policy(&self) -> Policy {
        self.emu.policy(PROJECT).expect("project exists")
    }

    fn airlock_titles(&self) -> Vec<String> {
        let mut t: Vec<String> = self
            .policy()
            .bindings
            .iter()
            .filter_map(|b| b.condition.as_ref()?.title.clone())
            .filter(|t| t.starts_with("airlock "))
            .collect();
        t.sort();
        t
    }
}

impl Drop for World {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn request_id(n: u32) -> RequestId {
    RequestId::parse(&format!("req{n:08}")).unwrap()
}

fn grant(n: u32, email: Option<&str>, not_after: OffsetDateTime) -> GrantSpec {
    GrantSpec {
        request_id: request_id(n),
        requester: UserName::parse("alice").unwrap(),
        email: email.map(str::to_owned),
        entitlement: EntitlementName::parse("payments-spanner-write").unwrap(),
        target: EntitlementTarget::GcpIam(Target { role: ROLE.into() }),
        not_after,
        secret: [7; 32],
    }
}

fn in_one_hour() -> OffsetDateTime {
    (OffsetDateTime::now_utc() + Duration::from_secs(3600))
        .replace_nanosecond(0)
        .unwrap()
}

fn rfc3339_seconds(t: OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap()
}

fn refused_detail(r: Result<(), ProviderError>) -> String {
    match r {
        Err(ProviderError::Refused { detail, .. }) => detail,
        other => panic!("expected Refused, got {other:?}"),
    }
}

#[tokio::test]
async fn grant_adds_exactly_one_conditional_binding_with_version_3() {
    let w = World::new().await;
    let p = w.provider();
    let until = in_one_hour();
    p.apply(&grant(1, Some("Alice@Example.com"), until))
        .await
        .unwrap();

    let policy = w.policy();
    assert_eq!(policy.version, 3);
    assert_eq!(policy.bindings.len(), 2);
    assert_eq!(policy.bindings[0], Binding::new("roles/owner", &[OWNER]));
    let b = &policy.bindings[1];
    assert_eq!(b.role, ROLE);
    assert_eq!(b.members, ["user:alice@example.com"]);
    let c = b.condition.as_ref().unwrap();
    assert_eq!(c.title.as_deref(), Some("airlock req00000001"));
    assert_eq!(
        c.expression,
        format!("request.time < timestamp(\"{}\")", rfc3339_seconds(until))
    );
    assert!(c.description.as_deref().unwrap().contains("req00000001"));
    assert_eq!(w.emu.stats().sets, 1);
}

#[tokio::test]
async fn apply_twice_writes_once() {
    let w = World::new().await;
    let p = w.provider();
    let g = grant(1, Some("alice@example.com"), in_one_hour());
    p.apply(&g).await.unwrap();
    let after_first = w.policy();
    p.apply(&g).await.unwrap();
    assert_eq!(w.policy(), after_first, "second apply must not write");
    assert_eq!(w.emu.stats().sets, 1);
}

#[tokio::test]
async fn apply_with_a_new_not_after_replaces_the_binding() {
    let w = World::new().await;
    let p = w.provider();
    let mut g = grant(1, Some("alice@example.com"), in_one_hour());
    p.apply(&g).await.unwrap();
    g.not_after += Duration::from_secs(1800);
    p.apply(&g).await.unwrap();
    let ours: Vec<_> = w
        .policy()
        .bindings
        .into_iter()
        .filter(|b| b.role == ROLE)
        .collect();
    assert_eq!(ours.len(), 1);
    assert!(ours[0]
        .condition
        .as_ref()
        .unwrap()
        .expression
        .contains(&rfc3339_seconds(g.not_after)));
}

#[tokio::test]
async fn remove_deletes_only_its_own_binding_and_absent_is_ok() {
    let w = World::new().await;
    let p = w.provider();
    let (g1, g2) = (
        grant(1, Some("alice@example.com"), in_one_hour()),
        grant(2, Some("bob@example.com"), in_one_hour()),
    );
    p.apply(&g1).await.unwrap();
    p.apply(&g2).await.unwrap();
    p.remove(&g1).await.unwrap();
    assert_eq!(w.airlock_titles(), ["airlock req00000002"]);
    assert!(w
        .emu
        .has_role(PROJECT, OWNER, "roles/owner", OffsetDateTime::now_utc()));

    let sets = w.emu.stats().sets;
    p.remove(&g1).await.unwrap();
    assert_eq!(
        w.emu.stats().sets,
        sets,
        "removing an absent binding must not write"
    );
}

#[tokio::test]
async fn a_binding_added_between_read_and_write_survives() {
    let w = World::new().await;
    let p = w.provider();
    w.emu.after_next_get(PROJECT, |policy| {
        policy.bindings.push(Binding::new(
            "roles/viewer",
            &["group:auditors@example.com"],
        ));
    });
    p.apply(&grant(1, Some("alice@example.com"), in_one_hour()))
        .await
        .unwrap();

    let now = OffsetDateTime::now_utc();
    assert!(w
        .emu
        .has_role(PROJECT, "group:auditors@example.com", "roles/viewer", now));
    assert!(w.emu.has_role(PROJECT, "user:alice@example.com", ROLE, now));
    assert!(w.emu.has_role(PROJECT, OWNER, "roles/owner", now));
    assert_eq!(w.emu.stats().conflicts, 1);
    assert_eq!(p.retries(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn twenty_independent_writers_racing_on_one_project_all_land() {
    let w = World::new().await;
    // Separate instances stand for separate airlock replicas: nothing but the
    // etag keeps them from overwriting each other.
    let providers: Vec<Arc<GcpIamProvider>> = (0..20).map(|_| Arc::new(w.provider())).collect();
    let tasks: Vec<_> = providers
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let p = p.clone();
            let g = grant(
                i as u32,
                Some(&format!("user{i}@example.com")),
                in_one_hour(),
            );
            tokio::spawn(async move { p.apply_counting(&g).await })
        })
        .collect();
    let mut retries = Vec::new();
    for t in tasks {
        retries.push(t.await.unwrap().expect("every grant lands"));
    }

    let now = OffsetDateTime::now_utc();
    for i in 0..20 {
        assert!(
            w.emu
                .has_role(PROJECT, &format!("user:user{i}@example.com"), ROLE, now),
            "grant {i} was lost"
        );
    }
    assert!(w.emu.has_role(PROJECT, OWNER, "roles/owner", now));
    assert_eq!(w.airlock_titles().len(), 20);
    let total: u64 = retries.iter().map(|&r| u64::from(r)).sum();
    let conflicts = w.emu.stats().conflicts;
    eprintln!(
        "20 independent writers: retries per grant {retries:?} (total {total}), conflicts seen by the API {conflicts}"
    );
    assert_eq!(
        total, conflicts,
        "every conflict was retried, nothing else was"
    );
    assert_eq!(w.emu.stats().sets, 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn twenty_concurrent_grants_through_one_provider_never_conflict() {
    let w = World::new().await;
    let p = Arc::new(w.provider());
    let tasks: Vec<_> = (0..20)
        .map(|i| {
            let p = p.clone();
            let g = grant(i, Some(&format!("user{i}@example.com")), in_one_hour());
            tokio::spawn(async move { p.apply_counting(&g).await })
        })
        .collect();
    for t in tasks {
        assert_eq!(t.await.unwrap().expect("every grant lands"), 0);
    }
    assert_eq!(w.airlock_titles().len(), 20);
    let stats = w.emu.stats();
    assert_eq!(stats.conflicts, 0);
    assert_eq!(stats.tokens_issued, 1, "one cached token serves all calls");
}

#[tokio::test]
async fn expired_airlock_bindings_are_cleaned_up_on_write() {
    let w = World::new().await;
    let past = |s: u64| OffsetDateTime::now_utc() - Duration::from_secs(s);
    let cond = |t: OffsetDateTime| {
        format!(
            "request.time < timestamp(\"{}\")",
            rfc3339_seconds(t.replace_nanosecond(0).unwrap())
        )
    };
    w.emu.seed_policy(
        PROJECT,
        Policy {
            bindings: vec![
                Binding::new("roles/owner", &[OWNER]),
                Binding::new(ROLE, &["user:old1@example.com"])
                    .with_condition("airlock oldreq0001", &cond(past(60))),
                Binding::new(ROLE, &["user:old2@example.com"])
                    .with_condition("airlock oldreq0002", &cond(past(7200))),
                Binding::new(ROLE, &["user:live@example.com"])
                    .with_condition("airlock livereq001", &cond(in_one_hour())),
                Binding::new(ROLE, &["user:temp@example.com"])
                    .with_condition("temporary (by hand)", &cond(past(60))),
            ],
            ..Default::default()
        },
    );
    // The policy is full: only cleaning up makes room for the new binding.
    w.emu.set_member_limit(5);
    w.provider()
        .apply(&grant(1, Some("alice@example.com"), in_one_hour()))
        .await
        .unwrap();

    assert_eq!(
        w.airlock_titles(),
        ["airlock livereq001", "airlock req00000001"]
    );
    let titles: Vec<_> = w
        .policy()
        .bindings
        .iter()
        .filter_map(|b| b.condition.as_ref()?.title.clone())
        .collect();
    assert!(
        titles.contains(&"temporary (by hand)".to_string()),
        "foreign bindings stay, expired or not"
    );
}

#[tokio::test]
async fn access_ends_at_not_after_without_any_remove() {
    let w = World::new().await;
    let until = in_one_hour();
    {
        let p = w.provider();
        p.apply(&grant(1, Some("alice@example.com"), until))
            .await
            .unwrap();
    } // airlock goes away: nobody will call remove.
    let member = "user:alice@example.com";
    assert!(w
        .emu
        .has_role(PROJECT, member, ROLE, OffsetDateTime::now_utc()));
    assert!(w
        .emu
        .has_role(PROJECT, member, ROLE, until - Duration::from_secs(1)));
    assert!(!w.emu.has_role(PROJECT, member, ROLE, until));
    assert!(!w
        .emu
        .has_role(PROJECT, member, ROLE, until + Duration::from_secs(86400)));
    assert_eq!(
        w.airlock_titles().len(),
        1,
        "the binding is still there, it just grants nothing"
    );
}

#[tokio::test]
async fn a_requester_without_email_is_refused_before_any_call() {
    let w = World::new().await;
    let detail = refused_detail(w.provider().apply(&grant(1, None, in_one_hour())).await);
    assert!(
        detail.contains("email") && detail.contains("[[user]]"),
        "{detail}"
    );
    let bad = refused_detail(
        w.provider()
            .apply(&grant(1, Some("alice"), in_one_hour()))
            .await,
    );
    assert!(bad.contains("alice"), "{bad}");
    assert_eq!(w.emu.stats().gets, 0);
    assert_eq!(w.emu.stats().tokens_issued, 0);
}

#[tokio::test]
async fn a_deleted_key_is_refused_without_echoing_secrets() {
    let w = World::new().await;
    w.emu
        .delete_service_account_key(w.key["private_key_id"].as_str().unwrap());
    let detail = refused_detail(
        w.provider()
            .apply(&grant(1, Some("a@example.com"), in_one_hour()))
            .await,
    );
    assert!(
        detail.contains("token endpoint") && detail.contains("invalid_grant"),
        "{detail}"
    );
    assert!(
        !detail.contains("PRIVATE KEY") && !detail.contains("eyJ"),
        "{detail}"
    );
    assert_eq!(w.emu.stats().sets, 0);
}

#[tokio::test]
async fn permission_denied_is_refused_with_the_permissions_needed() {
    let w = World::new().await;
    w.emu.deny(SA);
    let p = w.provider();
    let detail = refused_detail(
        p.apply(&grant(1, Some("a@example.com"), in_one_hour()))
            .await,
    );
    assert!(detail.contains("PERMISSION_DENIED"), "{detail}");
    assert!(
        detail.contains("resourcemanager.projects.setIamPolicy"),
        "{detail}"
    );
    let check = refused_detail(p.check().await);
    assert!(
        check.contains("lacks resourcemanager.projects.getIamPolicy"),
        "{check}"
    );
}

#[tokio::test]
async fn check_passes_with_permission_and_fails_for_a_missing_project() {
    let w = World::new().await;
    w.provider().check().await.unwrap();
    let missing = w.build(&w.config("projects/no-such-project")).unwrap();
    let detail = refused_detail(missing.check().await);
    assert!(detail.contains("projects/no-such-project"), "{detail}");
}

#[tokio::test]
async fn a_revoked_token_is_replaced_once() {
    let w = World::new().await;
    let p = w.provider();
    p.apply(&grant(1, Some("a@example.com"), in_one_hour()))
        .await
        .unwrap();
    w.emu.revoke_tokens();
    p.apply(&grant(2, Some("b@example.com"), in_one_hour()))
        .await
        .unwrap();
    assert_eq!(w.emu.stats().tokens_issued, 2);
    assert_eq!(w.airlock_titles().len(), 2);
}

#[tokio::test]
async fn tokens_are_renewed_before_they_expire() {
    let w = World::new().await;
    w.emu.set_token_lifetime(Duration::from_secs(2));
    let p = w.provider();
    p.apply(&grant(1, Some("a@example.com"), in_one_hour()))
        .await
        .unwrap();
    // Renewal is due at half the lifetime; the old token still works, so no 401 is needed.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    p.apply(&grant(2, Some("b@example.com"), in_one_hour()))
        .await
        .unwrap();
    assert_eq!(w.emu.stats().tokens_issued, 2);
}

#[tokio::test]
async fn an_unreachable_api_or_token_endpoint_is_unreachable() {
    let w = World::new().await;
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let mut config = w.config(PROJECT);
    config.endpoint = Some(format!("http://{closed}"));
    let r = w
        .build(&config)
        .unwrap()
        .apply(&grant(1, Some("a@example.com"), in_one_hour()))
        .await;
    assert!(matches!(r, Err(ProviderError::Unreachable { .. })), "{r:?}");

    let mut key = w.key.clone();
    key["token_uri"] = format!("http://{closed}/token").into();
    std::fs::write(w.dir.join("moved.json"), key.to_string()).unwrap();
    let mut config = w.config(PROJECT);
    config.credentials = Some("moved.json".into());
    let r = w
        .build(&config)
        .unwrap()
        .apply(&grant(1, Some("a@example.com"), in_one_hour()))
        .await;
    match r {
        Err(e @ ProviderError::Unreachable { .. }) => assert!(e.is_retryable()),
        other => panic!("expected Unreachable, got {other:?}"),
    }
}

#[tokio::test]
async fn a_missing_or_garbled_key_file_fails_at_build_naming_the_file() {
    let w = World::new().await;
    let mut config = w.config(PROJECT);
    config.credentials = Some("missing.json".into());
    let e = w.build(&config).err().expect("missing file must fail");
    assert!(e.contains("missing.json") && e.contains("gcp-prod"), "{e}");

    std::fs::write(
        w.dir.join("garbled.json"),
        "{\"type\": \"service_account\", SECRETSTUFF",
    )
    .unwrap();
    config.credentials = Some("garbled.json".into());
    let e = w.build(&config).err().expect("garbled file must fail");
    assert!(
        e.contains("garbled.json") && !e.contains("SECRETSTUFF"),
        "{e}"
    );

    let mut key = w.key.clone();
    key["private_key"] =
        "-----BEGIN PRIVATE KEY-----\nU0VDUkVUU1RVRkY=\n-----END PRIVATE KEY-----\n".into();
    std::fs::write(w.dir.join("badkey.json"), key.to_string()).unwrap();
    config.credentials = Some("badkey.json".into());
    let e = w.build(&config).err().expect("bad key must fail");
    assert!(e.contains("private_key") && !e.contains("U0VDUkVU"), "{e}");

    let mut key = w.key.clone();
    key.as_object_mut().unwrap().remove("client_email");
    std::fs::write(w.dir.join("noemail.json"), key.to_string()).unwrap();
    config.credentials = Some("noemail.json".into());
    let e = w.build(&config).err().expect("incomplete key must fail");
    assert!(e.contains("client_email") && !e.contains("BEGIN"), "{e}");
}

#[tokio::test]
async fn list_managed_remove_account_and_standing_access() {
    let w = World::new().await;
    let p = w.provider();
    p.apply(&grant(1, Some("alice@example.com"), in_one_hour()))
        .await
        .unwrap();
    p.apply(&grant(2, Some("bob@example.com"), in_one_hour()))
        .await
        .unwrap();
    // Standing access granted by hand, outside airlock.
    let mut policy = w.policy();
    policy.bindings.push(Binding::new(
        ROLE,
        &["user:carol@example.com", "group:dba@example.com"],
    ));
    policy.bindings.push(
        Binding::new(ROLE, &["user:dave@example.com"]).with_condition(
            "until friday",
            "request.time < timestamp(\"2099-01-01T00:00:00Z\")",
        ),
    );
    w.emu.seed_policy(PROJECT, policy);

    let mut managed = p.list_managed().await.unwrap();
    managed.sort_by(|a, b| a.account.cmp(&b.account));
    assert_eq!(managed.len(), 2);
    assert_eq!(
        managed[0].account,
        format!("{ROLE} user:alice@example.com airlock req00000001")
    );
    assert_eq!(managed[0].request_id, Some(request_id(1)));

    p.remove_account(&managed[0].account).await.unwrap();
    assert_eq!(w.airlock_titles(), ["airlock req00000002"]);
    p.remove_account(&managed[0].account).await.unwrap();
    let foreign = format!("{ROLE} user:dave@example.com until friday");
    assert!(matches!(
        p.remove_account(&foreign).await,
        Err(ProviderError::Refused { .. })
    ));
    assert!(w.emu.has_role(
        PROJECT,
        "user:carol@example.com",
        ROLE,
        OffsetDateTime::now_utc()
    ));

    let config = ValidatedConfig::parse(&format!(
        r#"
        [providers.gcp-prod]
        kind = "gcp-iam"
        resource = "{PROJECT}"
        [[entitlement]]
        name = "payments-spanner-write"
        provider = "gcp-prod"
        role = "{ROLE}"
        max_duration = "1h"
        approvals = {{ count = 1, reviewers = ["sre"] }}
        [[entitlement]]
        name = "payments-owner"
        provider = "gcp-prod"
        role = "roles/owner"
        max_duration = "1h"
        approvals = {{ count = 1, reviewers = ["sre"] }}
        "#
    ))
    .unwrap();
    let ents = config.targets_of(p.name());
    let mut standing = p.standing_access(&ents).await.unwrap();
    standing.sort_by(|a, b| a.principal.cmp(&b.principal));
    let got: Vec<(&str, &str)> = standing
        .iter()
        .map(|s| (s.entitlement.as_str(), s.principal.as_str()))
        .collect();
    assert_eq!(
        got,
        [
            ("payments-spanner-write", "group:dba@example.com"),
            ("payments-spanner-write", "user:carol@example.com"),
            ("payments-spanner-write", "user:dave@example.com"),
            ("payments-owner", "user:owner@example.com"),
        ]
    );
    assert!(standing[1].detail.contains("without condition"));
    assert!(standing[2].detail.contains("until friday"));
}

#[tokio::test]
async fn folders_and_organizations_work_the_same() {
    let w = World::new().await;
    for resource in ["folders/123456789", "organizations/987654321"] {
        w.emu.create_resource(resource);
        let p = w.build(&w.config(resource)).unwrap();
        p.apply(&grant(1, Some("alice@example.com"), in_one_hour()))
            .await
            .unwrap();
        assert!(w.emu.has_role(
            resource,
            "user:alice@example.com",
            ROLE,
            OffsetDateTime::now_utc()
        ));
        p.remove(&grant(1, Some("alice@example.com"), in_one_hour()))
            .await
            .unwrap();
        assert!(!w.emu.has_role(
            resource,
            "user:alice@example.com",
            ROLE,
            OffsetDateTime::now_utc()
        ));
    }
}

#[tokio::test]
async fn without_a_key_file_tokens_come_from_the_metadata_server() {
    let w = World::new().await;
    w.emu.set_metadata_account(SA);
    // Only this test builds a provider without `credentials`, so only it reads the variable.
    std::env::set_var("GCE_METADATA_HOST", w.emu.metadata_host());
    let mut config = w.config(PROJECT);
    config.credentials = None;
    let p = w.build(&config).unwrap();
    p.apply(&grant(1, Some("alice@example.com"), in_one_hour()))
        .await
        .unwrap();
    assert!(w.emu.has_role(
        PROJECT,
        "user:alice@example.com",
        ROLE,
        OffsetDateTime::now_utc()
    ));
    assert_eq!(w.emu.stats().tokens_issued, 1);
}

#[tokio::test]
async fn credentials_describe_the_binding() {
    let w = World::new().await;
    let until = in_one_hour();
    let c = w
        .provider()
        .credentials(
            &grant(1, Some("alice@example.com"), until),
            &Default::default(),
        )
        .await
        .unwrap();
    assert_eq!(c["resource"], PROJECT);
    assert_eq!(c["role"], ROLE);
    assert_eq!(c["member"], "user:alice@example.com");
    assert_eq!(c["condition_title"], "airlock req00000001");
    assert_eq!(
        c["console"],
        "https://console.cloud.google.com/iam-admin/iam?project=payments-prod"
    );
}
