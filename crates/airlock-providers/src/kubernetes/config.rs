//! `kind = "kubernetes"`: the section and entitlement keys, their checks and the constructor.

use std::sync::Arc;

use airlock_core::ProviderName;
use serde::Deserialize;

use crate::checks::is_plain_name;
use crate::{BuildError, InvalidValue, Provider, ProviderContext};

/// The `kind` value.
pub const KIND: &str = "kubernetes";

/// `[providers.NAME]` with `kind = "kubernetes"`.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// kubeconfig file, relative to the config; absent = in-cluster service account.
    pub kubeconfig: Option<String>,
    /// Prefix of the User subject name (e.g. `oidc:`), matching the API server's `--oidc-username-prefix`.
    pub user_prefix: Option<String>,
}

impl Config {
    /// Checks values beyond their types.
    pub fn validate(&self) -> Result<(), InvalidValue> {
        if let Some(p) = &self.user_prefix {
            if p.chars().any(char::is_control) || p.len() > 128 {
                return Err(InvalidValue::new(
                    "user_prefix",
                    "user_prefix must be at most 128 printable characters (e.g. \"oidc:\")",
                ));
            }
        }
        Ok(())
    }
}

/// A kubernetes entitlement's keys: the binding made.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Target {
    /// The ClusterRole to bind.
    pub cluster_role: String,
    /// Namespace of the RoleBinding; absent = a ClusterRoleBinding.
    pub namespace: Option<String>,
}

impl Target {
    /// Checks values beyond their types.
    pub fn validate(&self) -> Result<(), InvalidValue> {
        // RBAC names only forbid `/`, `%`, `.` and `..`, but airlock keeps them
        // to plain names (`:` appears in system roles such as `system:aggregate-to-edit`).
        let r = &self.cluster_role;
        if !(is_plain_name(r, b".:") && r != "." && r != "..") {
            return Err(InvalidValue::new(
                "cluster_role",
                format!("cluster_role `{r}` is not a valid Kubernetes name"),
            ));
        }
        // Namespaces are DNS-1123 labels.
        if let Some(ns) = &self.namespace {
            let ok = ns.len() <= 63
                && is_plain_name(ns, b"")
                && !ns.contains('_')
                && ns.bytes().all(|b| !b.is_ascii_uppercase());
            if !ok {
                return Err(InvalidValue::new(
                    "namespace",
                    format!("namespace `{ns}` is not a valid Kubernetes name (lower-case letters, digits and -)"),
                ));
            }
        }
        Ok(())
    }
}

/// A value to show when `key` is missing (no section key is required).
pub fn example(_key: &str) -> &'static str {
    ""
}

/// Builds the provider: loads the kubeconfig (or the in-cluster account) now,
/// so a broken file fails at start-up; connects on first use.
pub fn build(
    name: &ProviderName,
    config: &Config,
    ctx: &ProviderContext,
) -> Result<Arc<dyn Provider>, BuildError> {
    Ok(Arc::new(super::KubernetesProvider::new(
        name.clone(),
        config,
        ctx,
    )?))
}
