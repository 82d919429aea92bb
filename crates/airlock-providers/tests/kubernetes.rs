//! The Kubernetes provider against the in-process emulation of the RBAC API
//! (crates/airlock-emulators). The provider reads a real kubeconfig file and
//! talks HTTP through kube exactly as it would to a cluster; only the server
//! URL in that kubeconfig differs. No environment is needed.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use airlock_core::{EntitlementName, ProviderName, RequestId, UserName};
use airlock_emulators::kubernetes::{self, Handle, Resource};
use airlock_providers::kubernetes::KubernetesProvider;
use airlock_providers::kubernetes::{Config, Target};
use airlock_providers::{EntitlementTarget, ValidatedConfig};
use airlock_providers::{GrantSpec, Provider, ProviderContext, ProviderError};
use serde_json::{json, Value};
use time::macros::datetime;
use time::OffsetDateTime;

/// A temp folder holding the kubeconfig, removed on drop.
struct Dir(PathBuf);

impl Dir {
    fn new() -> Dir {
        static N: AtomicU64 = AtomicU64::new(0);
        let p = std::env::temp_dir().join(format!(
            "airlock-k8s-test-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&p).unwrap();
        Dir(p)
    }

    fn ctx(&self) -> ProviderContext {
        ProviderContext {
            config_dir: self.0.clone(),
            data_dir: self.0.clone(),
        }
    }

    fn write(&self, name: &str, text: &str) {
        std::fs::write(self.0.join(name), text).unwrap();
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn config(kubeconfig: Option<&str>) -> Config {
    Config {
        kubeconfig: kubeconfig.map(str::to_owned),
        user_prefix: Some("oidc:".into()),
    }
}

fn build(dir: &Dir, kubeconfig_text: &str) -> Result<KubernetesProvider, String> {
    dir.write("kubeconfig.yaml", kubeconfig_text);
    KubernetesProvider::new(
        ProviderName::parse("k8s-test").unwrap(),
        &config(Some("kubeconfig.yaml")),
        &dir.ctx(),
    )
    .map_err(|e| e.to_string())
}

/// One test's world: an emulator with a `payments` namespace and a provider pointed at it.
struct World {
    emu: Handle,
    provider: KubernetesProvider,
    _dir: Dir,
}

async fn world() -> World {
    let emu = kubernetes::start().await;
    emu.add_namespace("payments");
    let dir = Dir::new();
    let provider = build(&dir, &emu.kubeconfig(&emu.token)).expect("provider builds");
    World {
        emu,
        provider,
        _dir: dir,
    }
}

fn grant(id: &str, namespace: Option<&str>, not_after: OffsetDateTime) -> GrantSpec {
    GrantSpec {
        request_id: RequestId::parse(id).unwrap(),
        requester: UserName::parse("alice").unwrap(),
        email: None,
        entitlement: EntitlementName::parse("payments-k8s-edit").unwrap(),
        target: EntitlementTarget::Kubernetes(Target {
            cluster_role: "edit".into(),
            namespace: namespace.map(str::to_owned),
        }),
        not_after,
        secret: [7; 32],
    }
}

const NOT_AFTER: OffsetDateTime = datetime!(2030-01-02 03:04:05.678 UTC);

fn rb(w: &World, name: &str) -> Option<Value> {
    w.emu.get(Resource::RoleBindings, Some("payments"), name)
}

fn crb(w: &World, name: &str) -> Option<Value> {
    w.emu.get(Resource::ClusterRoleBindings, None, name)
}

fn hand_made(name: &str, role: &str, subjects: Value, labels: Value) -> Value {
    json!({
        "metadata": {"name": name, "labels": labels},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
        "subjects": subjects,
    })
}

fn refused(r: Result<(), ProviderError>) -> String {
    match r {
        Err(ProviderError::Refused { detail, .. }) => detail,
        other => panic!("expected Refused, got {other:?}"),
    }
}

fn unreachable(r: Result<(), ProviderError>) -> String {
    match r {
        Err(e @ ProviderError::Unreachable { .. }) => {
            assert!(e.is_retryable());
            e.to_string()
        }
        other => panic!("expected Unreachable, got {other:?}"),
    }
}

#[tokio::test]
async fn apply_creates_exactly_the_described_role_binding() {
    let w = world().await;
    let g = grant("req0000001", Some("payments"), NOT_AFTER);
    w.provider.apply(&g).await.unwrap();

    let b = rb(&w, "airlock-req0000001").expect("RoleBinding created in payments");
    assert_eq!(b["kind"], "RoleBinding");
    assert_eq!(
        b["roleRef"],
        json!({"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "edit"})
    );
    assert_eq!(
        b["subjects"],
        json!([{"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": "oidc:alice"}])
    );
    assert_eq!(
        b["metadata"]["labels"],
        json!({"app.kubernetes.io/managed-by": "airlock", "airlock.dev/request": "req0000001"})
    );
    assert_eq!(
        b["metadata"]["annotations"],
        json!({
            "airlock.dev/not-after": "2030-01-02T03:04:05Z",
            "airlock.dev/entitlement": "payments-k8s-edit",
            "airlock.dev/requester": "alice",
        })
    );
    assert!(w.emu.all(Resource::ClusterRoleBindings).is_empty());
    // Typed calls only: no discovery or /version round trips.
    for line in w.emu.requests() {
        assert!(
            line.contains(" /apis/rbac.authorization.k8s.io/v1/"),
            "unexpected request {line}"
        );
    }
}

#[tokio::test]
async fn a_grant_without_namespace_is_a_cluster_role_binding() {
    let w = world().await;
    w.provider
        .apply(&grant("req0000002", None, NOT_AFTER))
        .await
        .unwrap();
    let b = crb(&w, "airlock-req0000002").expect("ClusterRoleBinding created");
    assert_eq!(b["kind"], "ClusterRoleBinding");
    assert_eq!(b["roleRef"]["name"], "edit");
    assert_eq!(b["subjects"][0]["name"], "oidc:alice");
    assert_eq!(
        b["metadata"]["labels"]["app.kubernetes.io/managed-by"],
        "airlock"
    );
    assert!(w.emu.all(Resource::RoleBindings).is_empty());
}

#[tokio::test]
async fn apply_twice_changes_nothing() {
    let w = world().await;
    let g = grant("req0000003", Some("payments"), NOT_AFTER);
    w.provider.apply(&g).await.unwrap();
    let first = rb(&w, "airlock-req0000003").unwrap();
    w.provider.apply(&g).await.unwrap();
    let second = rb(&w, "airlock-req0000003").unwrap();
    assert_eq!(
        first, second,
        "same uid, same resourceVersion, same content"
    );
    assert_eq!(w.emu.all(Resource::RoleBindings).len(), 1);
}

#[tokio::test]
async fn apply_converges_a_binding_that_differs() {
    let w = world().await;
    // Same roleRef, wrong subject, a foreign label: updated in place, foreign label kept.
    let made = w
        .emu
        .create(
            Resource::RoleBindings,
            Some("payments"),
            hand_made(
                "airlock-req0000004",
                "edit",
                json!([{"kind": "User", "name": "mallory"}]),
                json!({"team": "payments"}),
            ),
        )
        .unwrap();
    w.provider
        .apply(&grant("req0000004", Some("payments"), NOT_AFTER))
        .await
        .unwrap();
    let b = rb(&w, "airlock-req0000004").unwrap();
    assert_eq!(b["metadata"]["uid"], made["metadata"]["uid"]);
    assert_eq!(b["subjects"][0]["name"], "oidc:alice");
    assert_eq!(b["subjects"].as_array().unwrap().len(), 1);
    assert_eq!(b["metadata"]["labels"]["team"], "payments");
    assert_eq!(
        b["metadata"]["labels"]["app.kubernetes.io/managed-by"],
        "airlock"
    );

    // A later not_after (a re-applied grant) updates the annotation.
    let later = datetime!(2031-05-06 07:08:09 UTC);
    w.provider
        .apply(&grant("req0000004", Some("payments"), later))
        .await
        .unwrap();
    let b = rb(&w, "airlock-req0000004").unwrap();
    assert_eq!(
        b["metadata"]["annotations"]["airlock.dev/not-after"],
        "2031-05-06T07:08:09Z"
    );

    // roleRef is immutable on the server: a binding to another role is replaced.
    let made = w
        .emu
        .create(
            Resource::RoleBindings,
            Some("payments"),
            hand_made("airlock-req0000005", "admin", json!([]), json!({})),
        )
        .unwrap();
    w.provider
        .apply(&grant("req0000005", Some("payments"), NOT_AFTER))
        .await
        .unwrap();
    let b = rb(&w, "airlock-req0000005").unwrap();
    assert_eq!(b["roleRef"]["name"], "edit");
    assert_ne!(b["metadata"]["uid"], made["metadata"]["uid"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_applies_converge_on_one_binding() {
    let emu = kubernetes::start().await;
    emu.add_namespace("payments");
    let dir = Dir::new();
    let provider = Arc::new(build(&dir, &emu.kubeconfig(&emu.token)).unwrap());
    // The same grant from several replicas at once: AlreadyExists is success.
    let same: Vec<_> = (0..8)
        .map(|_| {
            let p = provider.clone();
            tokio::spawn(async move {
                p.apply(&grant("req0000020", Some("payments"), NOT_AFTER))
                    .await
            })
        })
        .collect();
    for t in same {
        t.await.unwrap().unwrap();
    }
    // Differing versions of one grant: each write is conditional, losers re-read and retry.
    let years = [2031, 2032, 2033, 2034];
    let differing: Vec<_> = years
        .iter()
        .map(|y| {
            let p = provider.clone();
            let t = NOT_AFTER.replace_year(*y).unwrap();
            tokio::spawn(async move { p.apply(&grant("req0000020", Some("payments"), t)).await })
        })
        .collect();
    for t in differing {
        t.await.unwrap().unwrap();
    }
    let all = emu.all(Resource::RoleBindings);
    assert_eq!(all.len(), 1);
    let not_after = all[0]["metadata"]["annotations"]["airlock.dev/not-after"]
        .as_str()
        .unwrap();
    assert!(
        years
            .iter()
            .any(|y| not_after == format!("{y}-01-02T03:04:05Z")),
        "{not_after}"
    );
}

#[tokio::test]
async fn remove_deletes_the_binding_and_removing_again_is_ok() {
    let w = world().await;
    for ns in [Some("payments"), None] {
        let g = grant("req0000006", ns, NOT_AFTER);
        w.provider.apply(&g).await.unwrap();
        w.provider.remove(&g).await.unwrap();
        w.provider.remove(&g).await.unwrap();
    }
    assert!(rb(&w, "airlock-req0000006").is_none());
    assert!(crb(&w, "airlock-req0000006").is_none());
}

#[tokio::test]
async fn list_managed_finds_labelled_bindings_and_remove_account_removes_them() {
    let w = world().await;
    w.provider
        .apply(&grant("req0000007", Some("payments"), NOT_AFTER))
        .await
        .unwrap();
    w.provider
        .apply(&grant("req0000008", None, NOT_AFTER))
        .await
        .unwrap();
    // Not airlock's: no label.
    w.emu
        .create(
            Resource::RoleBindings,
            Some("payments"),
            hand_made(
                "team-edit",
                "edit",
                json!([{"kind": "Group", "name": "sre"}]),
                json!({}),
            ),
        )
        .unwrap();
    // Labelled by airlock but named by hand: managed, request from the label.
    w.emu
        .create(
            Resource::RoleBindings,
            Some("default"),
            hand_made(
                "leftover",
                "view",
                json!([]),
                json!({"app.kubernetes.io/managed-by": "airlock", "airlock.dev/request": "req0000009"}),
            ),
        )
        .unwrap();

    let mut found: Vec<(String, Option<String>)> = w
        .provider
        .list_managed()
        .await
        .unwrap()
        .into_iter()
        .map(|a| (a.account, a.request_id.map(|r| r.to_string())))
        .collect();
    found.sort();
    assert_eq!(
        found,
        vec![
            (
                "clusterrolebinding/airlock-req0000008".into(),
                Some("req0000008".into())
            ),
            (
                "rolebinding/default/leftover".into(),
                Some("req0000009".into())
            ),
            (
                "rolebinding/payments/airlock-req0000007".into(),
                Some("req0000007".into())
            ),
        ]
    );
    for (account, _) in &found {
        w.provider.remove_account(account).await.unwrap();
        // Already gone: still fine.
        w.provider.remove_account(account).await.unwrap();
    }
    assert!(w.provider.list_managed().await.unwrap().is_empty());
    assert!(
        rb(&w, "team-edit").is_some(),
        "the unlabelled binding stays"
    );
}

#[tokio::test]
async fn remove_account_refuses_bindings_without_airlocks_label() {
    let w = world().await;
    w.emu
        .create(
            Resource::RoleBindings,
            Some("payments"),
            hand_made(
                "airlock-req0000010",
                "edit",
                json!([]),
                json!({"app.kubernetes.io/managed-by": "helm"}),
            ),
        )
        .unwrap();
    let detail = refused(
        w.provider
            .remove_account("rolebinding/payments/airlock-req0000010")
            .await,
    );
    assert!(
        detail.contains("not labelled app.kubernetes.io/managed-by=airlock"),
        "{detail}"
    );
    assert!(rb(&w, "airlock-req0000010").is_some());
    let detail = refused(
        w.provider
            .remove_account("payments/airlock-req0000010")
            .await,
    );
    assert!(detail.contains("rolebinding/NAMESPACE/NAME"), "{detail}");
}

#[tokio::test]
async fn standing_access_reports_bindings_made_outside_airlock() {
    let w = world().await;
    let dir = Dir::new();
    dir.write("kubeconfig.yaml", &w.emu.kubeconfig(&w.emu.token));
    let text = r#"
[providers.k8s-prod]
kind = "kubernetes"
kubeconfig = "kubeconfig.yaml"
user_prefix = "oidc:"

[[entitlement]]
name = "payments-k8s-edit"
provider = "k8s-prod"
cluster_role = "edit"
namespace = "payments"
max_duration = "1h"
approvals = { count = 1, reviewers = ["sre"] }

[[entitlement]]
name = "cluster-view"
provider = "k8s-prod"
cluster_role = "view"
max_duration = "1h"
approvals = { count = 1, reviewers = ["sre"] }
"#;
    let cfg = ValidatedConfig::parse(text).unwrap();
    let name = ProviderName::parse("k8s-prod").unwrap();
    let provider: Arc<dyn Provider> =
        airlock_providers::build(&name, &cfg.provider_configs()[&name], &dir.ctx()).unwrap();
    let entitlements = cfg.targets_of(&name);

    // airlock's own grant is not standing access.
    provider
        .apply(&grant("req0000011", Some("payments"), NOT_AFTER))
        .await
        .unwrap();
    w.emu
        .create(
            Resource::RoleBindings,
            Some("payments"),
            hand_made(
                "payments-editors",
                "edit",
                json!([{"kind": "Group", "name": "payments-eng"}, {"kind": "ServiceAccount", "name": "ci"}]),
                json!({}),
            ),
        )
        .unwrap();
    // Other roles and other namespaces do not count for payments-k8s-edit.
    w.emu
        .create(
            Resource::RoleBindings,
            Some("payments"),
            hand_made(
                "viewers",
                "view",
                json!([{"kind": "User", "name": "eve"}]),
                json!({}),
            ),
        )
        .unwrap();
    w.emu
        .create(
            Resource::RoleBindings,
            Some("default"),
            hand_made(
                "editors",
                "edit",
                json!([{"kind": "User", "name": "eve"}]),
                json!({}),
            ),
        )
        .unwrap();
    // Cluster-wide edit is standing access for the namespaced entitlement too.
    let mut crb = hand_made(
        "bob-edit",
        "edit",
        json!([{"kind": "User", "name": "bob"}]),
        json!({}),
    );
    crb["kind"] = json!("ClusterRoleBinding");
    w.emu
        .create(Resource::ClusterRoleBindings, None, crb)
        .unwrap();
    let crb = hand_made(
        "ops-view",
        "view",
        json!([{"kind": "ServiceAccount", "name": "ops", "namespace": "kube-system"}]),
        json!({}),
    );
    w.emu
        .create(Resource::ClusterRoleBindings, None, crb)
        .unwrap();

    let mut found: Vec<(String, String)> = provider
        .standing_access(&entitlements)
        .await
        .unwrap()
        .into_iter()
        .map(|s| (s.entitlement, s.principal))
        .collect();
    found.sort();
    assert_eq!(
        found,
        vec![
            (
                "cluster-view".into(),
                "ServiceAccount kube-system/ops".into()
            ),
            ("payments-k8s-edit".into(), "Group payments-eng".into()),
            (
                "payments-k8s-edit".into(),
                "ServiceAccount payments/ci".into()
            ),
            ("payments-k8s-edit".into(), "User bob".into()),
        ]
    );
    let details: Vec<String> = provider
        .standing_access(&entitlements)
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.detail)
        .collect();
    assert!(
        details.contains(
            &"ClusterRoleBinding bob-edit binds ClusterRole edit cluster-wide outside airlock"
                .to_string()
        ),
        "{details:?}"
    );
    assert!(
        details.contains(
            &"RoleBinding payments/payments-editors binds ClusterRole edit outside airlock"
                .to_string()
        ),
        "{details:?}"
    );
}

#[tokio::test]
async fn check_passes_and_credentials_name_the_binding() {
    let w = world().await;
    w.provider.check().await.unwrap();
    let g = grant("req0000012", Some("payments"), NOT_AFTER);
    let c = w
        .provider
        .credentials(&g, &Default::default())
        .await
        .unwrap();
    assert_eq!(c["binding"], "rolebinding/payments/airlock-req0000012");
    assert_eq!(c["user"], "oidc:alice");
    assert_eq!(c["cluster_role"], "edit");
    assert_eq!(c["expires_at"], "2030-01-02T03:04:05Z");
}

#[tokio::test]
async fn an_api_server_that_is_down_or_failing_is_unreachable() {
    // Nothing listens on a port we just released.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let emu = kubernetes::start().await;
    let text = emu
        .kubeconfig(&emu.token)
        .replace(&emu.url, &format!("http://127.0.0.1:{port}"));
    let dir = Dir::new();
    let provider = build(&dir, &text).unwrap();
    let g = grant("req0000013", Some("payments"), NOT_AFTER);
    let msg = unreachable(provider.apply(&g).await);
    assert!(msg.contains(&format!("127.0.0.1:{port}")), "{msg}");
    unreachable(provider.check().await);
    unreachable(provider.remove(&g).await);

    let w = world().await;
    for code in [500, 503, 429] {
        w.emu.set_outage(Some(code));
        let msg = unreachable(w.provider.apply(&g).await);
        assert!(msg.contains(&format!("HTTP {code}")), "{msg}");
    }
    w.emu.set_outage(None);
    w.provider.apply(&g).await.unwrap();
}

#[tokio::test]
async fn rejected_credentials_missing_rights_and_missing_namespaces_are_refused() {
    let w = world().await;
    let g = grant("req0000014", Some("payments"), NOT_AFTER);

    let dir = Dir::new();
    let bad_token = build(&dir, &w.emu.kubeconfig("not-the-token")).unwrap();
    let detail = refused(bad_token.check().await);
    assert!(detail.contains("HTTP 401"), "{detail}");
    assert!(
        !detail.contains("not-the-token"),
        "never echo the token: {detail}"
    );

    let dir = Dir::new();
    let read_only = build(&dir, &w.emu.kubeconfig(&w.emu.read_only_token)).unwrap();
    read_only.check().await.unwrap();
    let detail = refused(read_only.apply(&g).await);
    assert!(
        detail.contains("cannot create resource \"rolebindings\""),
        "{detail}"
    );
    assert!(detail.contains("docs/providers/kubernetes.md"), "{detail}");

    let detail = refused(
        w.provider
            .apply(&grant("req0000015", Some("nowhere"), NOT_AFTER))
            .await,
    );
    assert!(
        detail.contains("namespaces \"nowhere\" not found"),
        "{detail}"
    );
    assert!(detail.contains("create the namespace"), "{detail}");

    // An entitlement without a ClusterRole never reaches the provider: the
    // configuration is refused when it is loaded.
    let detail = ValidatedConfig::parse(
        "[providers.k8s]\nkind = \"kubernetes\"\n[[entitlement]]\nname = \"e\"\nprovider = \"k8s\"\n\
         max_duration = \"1h\"\napprovals = { count = 1, reviewers = [\"sre\"] }\n",
    )
    .unwrap_err()
    .to_string();
    assert!(detail.contains("cluster_role"), "{detail}");
    let mut other_kind = g.clone();
    other_kind.target = EntitlementTarget::Command(Default::default());
    let detail = refused(w.provider.apply(&other_kind).await);
    assert!(
        detail.contains("not configured for this provider's kind"),
        "{detail}"
    );
}

#[test]
fn a_missing_or_broken_kubeconfig_fails_at_build_naming_the_file() {
    let dir = Dir::new();
    let name = ProviderName::parse("k8s-test").unwrap();
    let err = KubernetesProvider::new(name.clone(), &config(Some("absent.yaml")), &dir.ctx())
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("absent.yaml") && err.contains("cannot be read"),
        "{err}"
    );

    let secret = "s3cr3t-token-value";
    let garbled = format!("apiVersion: v1\nusers: [ {{ name: a, user: {{ token: {secret} }}\n");
    let err = build(&dir, &garbled).err().unwrap();
    assert!(err.contains("kubeconfig.yaml"), "{err}");
    assert!(!err.contains(secret), "never echo the token: {err}");

    let no_context = "apiVersion: v1\nkind: Config\nclusters: []\nusers: []\ncontexts: []\n";
    let err = build(&dir, no_context).err().unwrap();
    assert!(
        err.contains("kubeconfig.yaml") && err.contains("current-context"),
        "{err}"
    );

    let err = build(&dir, "").err().unwrap();
    assert!(err.contains("kubeconfig.yaml"), "{err}");
}

#[test]
fn without_a_kubeconfig_outside_a_cluster_the_error_says_what_to_set() {
    if std::env::var_os("KUBERNETES_SERVICE_HOST").is_some() {
        return; // Running inside a pod: in-cluster configuration is legitimately there.
    }
    let dir = Dir::new();
    let err = KubernetesProvider::new(
        ProviderName::parse("k8s-test").unwrap(),
        &config(None),
        &dir.ctx(),
    )
    .err()
    .unwrap()
    .to_string();
    assert!(err.contains("no `kubeconfig` is set"), "{err}");
}
