//! Kubernetes RBAC provider: a grant is a RoleBinding in the entitlement's
//! namespace (or a ClusterRoleBinding when it names none) called
//! `airlock-<request id>`, binding the entitlement's ClusterRole to the
//! requester as a User (`user_prefix` + name), labelled as airlock's.
//!
//! RBAC has no expiry of its own: the binding grants until it is deleted, so
//! the reconciler's removal at `not_after` is the only enforcement. The
//! `airlock.dev/not-after` annotation is for people and other tools.

mod binding;
mod connect;

use std::collections::BTreeMap;

use airlock_core::ProviderName;
use k8s_openapi::api::rbac::v1::{ClusterRoleBinding, RoleBinding};
use kube::api::{Api, DeleteParams, ListParams, PostParams, Preconditions};

pub use binding::{
    Account, ENTITLEMENT_ANNOTATION, MANAGED_BY_LABEL, MANAGED_BY_VALUE, NAME_PREFIX,
    NOT_AFTER_ANNOTATION, REQUESTER_ANNOTATION, REQUEST_LABEL,
};
use binding::{BindingObject, Desired};
pub use connect::{CONNECT_TIMEOUT, IO_TIMEOUT};

use crate::{
    BuildError, CatalogTarget, CredentialRequest, GrantSpec, ManagedAccount, Provider,
    ProviderContext, ProviderError, StandingAccess,
};

pub mod config;
pub use config::{Config, Target};

/// How often apply/remove re-read an object that changed under them before giving up.
const MAX_ATTEMPTS: usize = 5;

/// `[providers.NAME] kind = "kubernetes"`.
pub struct KubernetesProvider {
    name: ProviderName,
    user_prefix: String,
    conn: connect::Connection,
}

impl KubernetesProvider {
    /// Loads the kubeconfig (or the in-cluster service account) now, so a
    /// missing or broken file fails at start-up; connects on first use.
    pub fn new(
        name: ProviderName,
        config: &Config,
        ctx: &ProviderContext,
    ) -> Result<Self, BuildError> {
        config.validate().map_err(|e| BuildError::Config {
            provider: name.to_string(),
            detail: e.detail,
        })?;
        let user_prefix = config.user_prefix.clone().unwrap_or_default();
        let path = config.kubeconfig.as_ref().map(|k| ctx.config_dir.join(k));
        let conn = connect::Connection::load(name.as_str(), path.as_deref())?;
        Ok(KubernetesProvider {
            name,
            user_prefix,
            conn,
        })
    }

    /// The subject name a requester is bound as.
    pub fn user_prefix(&self) -> &str {
        &self.user_prefix
    }

    fn refused(&self, detail: impl Into<String>) -> ProviderError {
        ProviderError::Refused {
            provider: self.name.to_string(),
            detail: detail.into(),
        }
    }

    fn classify(&self, doing: &str, e: kube::Error) -> ProviderError {
        connect::classify(self.name.as_str(), &self.conn.server(), doing, e)
    }

    async fn client(&self) -> Result<kube::Client, ProviderError> {
        self.conn.client(self.name.as_str()).await
    }

    /// The grant's ClusterRole and namespace (`None`: cluster-wide).
    fn target<'g>(
        &self,
        grant: &'g GrantSpec,
    ) -> Result<(&'g str, Option<&'g str>), ProviderError> {
        let t = grant.target_of::<Target>(&self.name)?;
        Ok((t.cluster_role.as_str(), t.namespace.as_deref()))
    }

    /// Creates the binding, or converges an existing one onto it: unchanged
    /// when it already grants the same, replaced (conditional on its
    /// resourceVersion) when it differs, deleted and recreated when its
    /// immutable roleRef differs. Re-reads when another writer gets in between.
    async fn apply_binding<K: BindingObject>(
        &self,
        api: &Api<K>,
        desired: &Desired,
        namespace: Option<&str>,
        what: &str,
    ) -> Result<(), ProviderError> {
        let fresh: K = desired.object(namespace);
        for _ in 0..MAX_ATTEMPTS {
            match api.create(&PostParams::default(), &fresh).await {
                Ok(_) => return Ok(()),
                Err(e) if connect::is_status(&e, 409, Some("AlreadyExists")) => {}
                Err(e) => return Err(self.classify(&format!("creating {what}"), e)),
            }
            let current = match api.get_opt(&desired.name).await {
                Ok(Some(c)) => c,
                // Deleted since the create said it exists: create again.
                Ok(None) => continue,
                Err(e) => return Err(self.classify(&format!("reading {what}"), e)),
            };
            if desired.is_met_by(&current) {
                return Ok(());
            }
            if current.role_ref() != &desired.role_ref {
                // roleRef cannot be updated; replace the object, but only the one we read.
                let meta = current.meta();
                let dp = DeleteParams {
                    preconditions: Some(Preconditions {
                        uid: meta.uid.clone(),
                        resource_version: meta.resource_version.clone(),
                    }),
                    ..DeleteParams::default()
                };
                match api.delete(&desired.name, &dp).await {
                    Ok(_) => {}
                    Err(e)
                        if connect::is_status(&e, 404, None)
                            || connect::is_status(&e, 409, None) => {}
                    Err(e) => return Err(self.classify(&format!("replacing {what}"), e)),
                }
                continue;
            }
            match api
                .replace(
                    &desired.name,
                    &PostParams::default(),
                    &desired.replacement(&current),
                )
                .await
            {
                Ok(_) => return Ok(()),
                // Changed or deleted since we read it: look again.
                Err(e) if connect::is_status(&e, 409, None) => continue,
                Err(e) => return Err(self.classify(&format!("updating {what}"), e)),
            }
        }
        Err(ProviderError::Unreachable {
            provider: self.name.to_string(),
            detail: format!("{what} kept changing while airlock applied it ({MAX_ATTEMPTS} attempts); will retry"),
        })
    }

    /// Deletes a binding by name; absent is success.
    async fn delete_binding<K: BindingObject>(
        &self,
        api: &Api<K>,
        name: &str,
        what: &str,
    ) -> Result<(), ProviderError> {
        match api.delete(name, &DeleteParams::default()).await {
            Ok(_) => Ok(()),
            Err(e) if connect::is_status(&e, 404, None) => Ok(()),
            Err(e) => Err(self.classify(&format!("deleting {what}"), e)),
        }
    }

    /// Deletes a binding found by drift only while it carries airlock's label:
    /// the delete is conditional on the uid and resourceVersion that were checked.
    async fn delete_if_managed<K: BindingObject>(
        &self,
        api: &Api<K>,
        name: &str,
        what: &str,
    ) -> Result<(), ProviderError> {
        for _ in 0..MAX_ATTEMPTS {
            let current = match api.get_opt(name).await {
                Ok(Some(c)) => c,
                Ok(None) => return Ok(()),
                Err(e) => return Err(self.classify(&format!("reading {what}"), e)),
            };
            let meta = current.meta();
            if !binding::is_managed(meta) {
                return Err(self.refused(format!(
                    "{what} is not labelled {MANAGED_BY_LABEL}={MANAGED_BY_VALUE}: airlock only \
                     removes bindings it manages; remove it by hand if it should go"
                )));
            }
            let dp = DeleteParams {
                preconditions: Some(Preconditions {
                    uid: meta.uid.clone(),
                    resource_version: meta.resource_version.clone(),
                }),
                ..DeleteParams::default()
            };
            match api.delete(name, &dp).await {
                Ok(_) => return Ok(()),
                Err(e) if connect::is_status(&e, 404, None) => return Ok(()),
                // Modified since the label check: check again.
                Err(e) if connect::is_status(&e, 409, None) => continue,
                Err(e) => return Err(self.classify(&format!("deleting {what}"), e)),
            }
        }
        Err(ProviderError::Unreachable {
            provider: self.name.to_string(),
            detail: format!("{what} kept changing while airlock removed it; will retry"),
        })
    }

    async fn list<K: BindingObject>(
        &self,
        api: &Api<K>,
        params: &ListParams,
        what: &str,
    ) -> Result<Vec<K>, ProviderError> {
        api.list(params)
            .await
            .map(|l| l.items)
            .map_err(|e| self.classify(&format!("listing {what}"), e))
    }
}

fn describe(namespace: Option<&str>, name: &str) -> String {
    match namespace {
        Some(ns) => format!("RoleBinding {ns}/{name}"),
        None => format!("ClusterRoleBinding {name}"),
    }
}

#[async_trait::async_trait]
impl Provider for KubernetesProvider {
    fn name(&self) -> &ProviderName {
        &self.name
    }

    fn kind(&self) -> &'static str {
        "kubernetes"
    }

    async fn check(&self) -> Result<(), ProviderError> {
        // Reachable, credentials accepted, and allowed to list what drift reads.
        let api: Api<ClusterRoleBinding> = Api::all(self.client().await?);
        let params = ListParams::default()
            .labels(&binding::managed_selector())
            .limit(1);
        self.list(&api, &params, "ClusterRoleBindings").await?;
        Ok(())
    }

    async fn apply(&self, grant: &GrantSpec) -> Result<(), ProviderError> {
        let (role, namespace) = self.target(grant)?;
        let desired = Desired::for_grant(grant, role, &self.user_prefix)
            .map_err(|e| self.refused(e.to_string()))?;
        let what = describe(namespace, &desired.name);
        let client = self.client().await?;
        match namespace {
            Some(ns) => {
                let api: Api<RoleBinding> = Api::namespaced(client, ns);
                self.apply_binding(&api, &desired, Some(ns), &what).await?;
            }
            None => {
                let api: Api<ClusterRoleBinding> = Api::all(client);
                self.apply_binding(&api, &desired, None, &what).await?;
            }
        }
        tracing::debug!(provider = %self.name, binding = %what, cluster_role = role, "applied grant");
        Ok(())
    }

    async fn remove(&self, grant: &GrantSpec) -> Result<(), ProviderError> {
        let name = binding::binding_name(&grant.request_id);
        let (_, namespace) = self.target(grant)?;
        let what = describe(namespace, &name);
        let client = self.client().await?;
        match namespace {
            Some(ns) => {
                let api: Api<RoleBinding> = Api::namespaced(client, ns);
                self.delete_binding(&api, &name, &what).await
            }
            None => {
                let api: Api<ClusterRoleBinding> = Api::all(client);
                self.delete_binding(&api, &name, &what).await
            }
        }
    }

    async fn list_managed(&self) -> Result<Vec<ManagedAccount>, ProviderError> {
        let client = self.client().await?;
        let params = ListParams::default().labels(&binding::managed_selector());
        let mut out = Vec::new();
        let rbs = self
            .list(
                &Api::<RoleBinding>::all(client.clone()),
                &params,
                "RoleBindings",
            )
            .await?;
        for rb in rbs {
            let account = Account::RoleBinding {
                namespace: rb.metadata.namespace.clone().unwrap_or_default(),
                name: rb.metadata.name.clone().unwrap_or_default(),
            };
            out.push(ManagedAccount {
                request_id: account.request_id(&rb.metadata),
                account: account.to_string(),
            });
        }
        let crbs = self
            .list(
                &Api::<ClusterRoleBinding>::all(client),
                &params,
                "ClusterRoleBindings",
            )
            .await?;
        for crb in crbs {
            let account = Account::ClusterRoleBinding {
                name: crb.metadata.name.clone().unwrap_or_default(),
            };
            out.push(ManagedAccount {
                request_id: account.request_id(&crb.metadata),
                account: account.to_string(),
            });
        }
        Ok(out)
    }

    async fn remove_account(&self, account: &str) -> Result<(), ProviderError> {
        let parsed = Account::parse(account).ok_or_else(|| {
            self.refused(format!(
                "`{account}` is not a binding this provider lists (rolebinding/NAMESPACE/NAME or clusterrolebinding/NAME)"
            ))
        })?;
        let client = self.client().await?;
        match &parsed {
            Account::RoleBinding { namespace, name } => {
                let api: Api<RoleBinding> = Api::namespaced(client, namespace);
                self.delete_if_managed(&api, name, &describe(Some(namespace), name))
                    .await
            }
            Account::ClusterRoleBinding { name } => {
                let api: Api<ClusterRoleBinding> = Api::all(client);
                self.delete_if_managed(&api, name, &describe(None, name))
                    .await
            }
        }
    }

    async fn standing_access(
        &self,
        entitlements: &[CatalogTarget],
    ) -> Result<Vec<StandingAccess>, ProviderError> {
        let wanted: Vec<(&CatalogTarget, &Target)> = entitlements
            .iter()
            .filter(|e| e.provider == self.name)
            .filter_map(|e| Some((e, e.target_of::<Target>()?)))
            .collect();
        if wanted.is_empty() {
            return Ok(Vec::new());
        }
        let client = self.client().await?;
        let all = ListParams::default();
        let crbs = self
            .list(
                &Api::<ClusterRoleBinding>::all(client.clone()),
                &all,
                "ClusterRoleBindings",
            )
            .await?;
        let mut by_namespace: BTreeMap<&str, Vec<RoleBinding>> = BTreeMap::new();
        for (_, t) in &wanted {
            if let Some(ns) = t.namespace.as_deref() {
                if !by_namespace.contains_key(ns) {
                    let api: Api<RoleBinding> = Api::namespaced(client.clone(), ns);
                    let rbs = self
                        .list(&api, &all, &format!("RoleBindings in {ns}"))
                        .await?;
                    by_namespace.insert(ns, rbs);
                }
            }
        }
        let binds = |r: &k8s_openapi::api::rbac::v1::RoleRef, role: &str| {
            r.kind == "ClusterRole" && r.name == role
        };
        let mut out = Vec::new();
        for (e, t) in wanted {
            let role = t.cluster_role.as_str();
            // A ClusterRoleBinding grants the role in every namespace, so it
            // is standing access for namespaced entitlements too.
            for crb in crbs
                .iter()
                .filter(|b| !binding::is_managed(&b.metadata) && binds(&b.role_ref, role))
            {
                let name = crb.metadata.name.as_deref().unwrap_or_default();
                for s in crb.subjects() {
                    out.push(StandingAccess {
                        entitlement: e.entitlement.to_string(),
                        principal: binding::principal(s, None),
                        detail: format!(
                            "ClusterRoleBinding {name} binds ClusterRole {role} cluster-wide outside airlock"
                        ),
                    });
                }
            }
            let Some(ns) = t.namespace.as_deref() else {
                continue;
            };
            for rb in by_namespace[ns]
                .iter()
                .filter(|b| !binding::is_managed(&b.metadata) && binds(&b.role_ref, role))
            {
                let name = rb.metadata.name.as_deref().unwrap_or_default();
                for s in rb.subjects() {
                    out.push(StandingAccess {
                        entitlement: e.entitlement.to_string(),
                        principal: binding::principal(s, Some(ns)),
                        detail: format!(
                            "RoleBinding {ns}/{name} binds ClusterRole {role} outside airlock"
                        ),
                    });
                }
            }
        }
        Ok(out)
    }

    async fn credentials(
        &self,
        grant: &GrantSpec,
        _request: &CredentialRequest,
    ) -> Result<serde_json::Value, ProviderError> {
        let (role, namespace) = self.target(grant)?;
        let name = binding::binding_name(&grant.request_id);
        let account = match namespace {
            Some(ns) => Account::RoleBinding {
                namespace: ns.to_owned(),
                name,
            },
            None => Account::ClusterRoleBinding { name },
        };
        let user = format!("{}{}", self.user_prefix, grant.requester);
        Ok(serde_json::json!({
            "binding": account.to_string(),
            "user": user,
            "cluster_role": role,
            "namespace": namespace,
            "expires_at": binding::rfc3339_utc(grant.not_after),
            "usage": "use your own kubeconfig: the cluster now authorizes your identity for the ClusterRole until expires_at",
        }))
    }
}
