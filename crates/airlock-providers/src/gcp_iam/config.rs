//! `kind = "gcp-iam"`: the section and entitlement keys, their checks and the constructor.

use std::sync::Arc;

use airlock_core::ProviderName;
use serde::Deserialize;

use crate::checks::is_plain_name;
use crate::{BuildError, InvalidValue, Provider, ProviderContext};

/// The `kind` value.
pub const KIND: &str = "gcp-iam";

/// `[providers.NAME]` with `kind = "gcp-iam"`.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// `projects/ID`, `folders/ID` or `organizations/ID`.
    pub resource: String,
    /// Service account key file, relative to the config; absent = the metadata server.
    pub credentials: Option<String>,
    /// API base URL (default `https://cloudresourcemanager.googleapis.com`).
    pub endpoint: Option<String>,
}

impl Config {
    /// Checks values beyond their types.
    pub fn validate(&self) -> Result<(), InvalidValue> {
        let r = &self.resource;
        let ok = ["projects/", "folders/", "organizations/"]
            .iter()
            .any(|pre| r.strip_prefix(pre).is_some_and(is_resource_id));
        if !ok {
            return Err(InvalidValue::new(
                "resource",
                format!("resource `{r}` must be projects/ID, folders/ID or organizations/ID"),
            ));
        }
        Ok(())
    }
}

fn is_resource_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.' || b == b':')
}

/// A gcp-iam entitlement's keys.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Target {
    /// The IAM role (`roles/...`, or a custom `projects/P/roles/R`).
    pub role: String,
}

impl Target {
    /// Checks values beyond their types.
    pub fn validate(&self) -> Result<(), InvalidValue> {
        let role = &self.role;
        let ok = (role.starts_with("roles/")
            || (role.starts_with("projects/") || role.starts_with("organizations/"))
                && role.contains("/roles/"))
            && is_plain_name(role, b"./");
        if !ok {
            return Err(InvalidValue::new(
                "role",
                format!(
                    "role `{role}` is not valid: an IAM role such as roles/spanner.databaseUser"
                ),
            ));
        }
        Ok(())
    }
}

/// A value to show when `key` is missing.
pub fn example(_key: &str) -> &'static str {
    " = \"projects/PROJECT_ID\""
}

/// Builds the provider: reads the key file (if any); does not call Google.
pub fn build(
    name: &ProviderName,
    config: &Config,
    ctx: &ProviderContext,
) -> Result<Arc<dyn Provider>, BuildError> {
    Ok(Arc::new(super::GcpIamProvider::new(
        name.clone(),
        config,
        ctx,
    )?))
}
