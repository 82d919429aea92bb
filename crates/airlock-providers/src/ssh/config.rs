//! `kind = "ssh"`: the section and entitlement keys, their checks and the constructor.

use std::sync::Arc;

use airlock_core::ProviderName;
use serde::Deserialize;

use crate::checks::is_plain_name;
use crate::{BuildError, InvalidValue, Provider, ProviderContext};

/// The `kind` value.
pub const KIND: &str = "ssh";

/// Certificate extensions when an entitlement lists none.
pub const DEFAULT_EXTENSIONS: &[&str] = &["permit-pty"];

/// `[providers.NAME]` with `kind = "ssh"`.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// OpenSSH private key file of the CA, relative to the config; generated (Ed25519) if missing.
    pub ca_key: String,
}

impl Config {
    /// Checks values beyond their types.
    pub fn validate(&self) -> Result<(), InvalidValue> {
        if self.ca_key.trim().is_empty() {
            return Err(InvalidValue::new(
                "ca_key",
                "`ca_key` is empty; name a file such as \"ssh_ca\"",
            ));
        }
        Ok(())
    }
}

/// An ssh entitlement's keys: what the certificate says.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Target {
    /// Certificate principals (remote login names).
    pub principals: Vec<String>,
    /// Certificate extensions (default `permit-pty`).
    #[serde(default = "default_extensions")]
    pub extensions: Vec<String>,
    /// `source-address` critical option (comma-separated CIDR list).
    pub source_address: Option<String>,
    /// `force-command` critical option.
    pub force_command: Option<String>,
}

fn default_extensions() -> Vec<String> {
    DEFAULT_EXTENSIONS.iter().map(|s| s.to_string()).collect()
}

impl Target {
    /// Checks values beyond their types.
    pub fn validate(&self) -> Result<(), InvalidValue> {
        if self.principals.is_empty() {
            return Err(InvalidValue::new(
                "principals",
                "`principals` is empty: list the remote login names, such as principals = [\"deploy\"]",
            ));
        }
        for p in &self.principals {
            if !is_plain_name(p, b".@") || p.len() > 64 {
                return Err(InvalidValue::new(
                    "principals",
                    format!("principal `{p}` is not a valid login name (letters, digits, _ - . @)"),
                ));
            }
        }
        for x in &self.extensions {
            if !is_plain_name(x, b".@") {
                return Err(InvalidValue::new(
                    "extensions",
                    format!("extension `{x}` is not valid (letters, digits, _ - . @, such as permit-pty)"),
                ));
            }
        }
        if let Some(fc) = &self.force_command {
            if fc.is_empty() || fc.contains('\0') || fc.contains('\n') {
                return Err(InvalidValue::new(
                    "force_command",
                    "force_command must be one non-empty line",
                ));
            }
        }
        if let Some(sa) = &self.source_address {
            if !is_plain_name(sa, b".:/,") {
                return Err(InvalidValue::new(
                    "source_address",
                    format!(
                        "source_address `{sa}` must be a comma-separated list of addresses/CIDRs"
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// A value to show when `key` is missing.
pub fn example(_key: &str) -> &'static str {
    " = \"ssh_ca\" (an OpenSSH private key file; generated if missing)"
}

/// Builds the provider: loads the CA key, generating it if the file is missing.
pub fn build(
    name: &ProviderName,
    config: &Config,
    ctx: &ProviderContext,
) -> Result<Arc<dyn Provider>, BuildError> {
    Ok(Arc::new(super::SshProvider::new(
        name.clone(),
        config,
        ctx,
    )?))
}
