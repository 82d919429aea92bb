//! The Kubernetes provider through the real binary and CLI, against the local
//! emulation of the RBAC REST API (no API server can run here; the provider's
//! code path is the production one, only the kubeconfig's server differs).

use airlock_emulators::kubernetes::{self, Resource};

use crate::kit::*;

#[test]
fn rolebinding_is_created_for_the_grant_and_deleted_on_revoke() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let k8s = rt.block_on(kubernetes::start());
    k8s.add_namespace("payments");
    let mut setup = Setup::new(Db::Sqlite);
    setup.extra = r#"
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
approvals = { count = 1, reviewers = ["payments-eng"] }
"#
    .into();
    let s = Server::start_with_files(setup, &[("kubeconfig.yaml", &k8s.kubeconfig(&k8s.token))]);
    let (alice, bob) = (s.token("alice"), s.token("bob"));
    let r = s.json(
        &alice,
        &[
            "request",
            "payments-k8s-edit",
            "--for",
            "10m",
            "--reason",
            "INC-5",
        ],
    );
    let id = id_of(&r);
    s.json(&bob, &["review", &id, "--approve"]);
    let r = s.wait_for(&alice, &id, 10, |r| r["state"] == "active");
    let name = format!("airlock-{id}");
    let b = k8s
        .get(Resource::RoleBindings, Some("payments"), &name)
        .expect("RoleBinding exists while active");
    assert_eq!(b["roleRef"]["kind"], "ClusterRole");
    assert_eq!(b["roleRef"]["name"], "edit");
    assert_eq!(b["subjects"][0]["kind"], "User");
    assert_eq!(b["subjects"][0]["name"], "oidc:alice");
    assert_eq!(
        b["metadata"]["labels"]["app.kubernetes.io/managed-by"],
        "airlock"
    );
    let annotations = b["metadata"]["annotations"].to_string();
    assert!(
        annotations.contains(
            r["not_after"]
                .as_str()
                .unwrap()
                .trim_end_matches('Z')
                .split('.')
                .next()
                .unwrap()
        ),
        "{annotations}"
    );

    s.json(&alice, &["revoke", &id]);
    s.wait_for(&alice, &id, 10, |r| r["grant"]["phase"] == "removed");
    assert!(k8s
        .get(Resource::RoleBindings, Some("payments"), &name)
        .is_none());

    // A binding to the same ClusterRole made outside airlock is standing access.
    k8s.create(
        Resource::RoleBindings,
        Some("payments"),
        serde_json::json!({
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": "mallory-edit", "namespace": "payments"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "edit"},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "mallory"}]
        }),
    )
    .unwrap();
    let report = s.json(&s.admin, &["drift", "--provider", "k8s-prod"]);
    let standing = report["providers"][0]["standing"].to_string();
    assert!(standing.contains("mallory"), "{report}");
    drop(k8s);
    drop(rt);
}
