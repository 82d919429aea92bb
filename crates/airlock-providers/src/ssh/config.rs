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
    /// OpenSSH `known_hosts` file (relative to the config) with the host keys
    /// of the gateway's targets (`target_host`); the gateway connects to no
    /// host whose key is not in it. Needed when an entitlement has `target_host`.
    pub known_hosts: Option<String>,
    /// The gateway's own SSH host key file (what `ssh` clients pin), relative
    /// to the config; generated (Ed25519) if missing. Default `CA_KEY-gateway-host`.
    pub gateway_host_key: Option<String>,
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
        for (key, value) in [
            ("known_hosts", &self.known_hosts),
            ("gateway_host_key", &self.gateway_host_key),
        ] {
            if value.as_deref().is_some_and(|v| v.trim().is_empty()) {
                return Err(InvalidValue::new(
                    key,
                    format!("`{key}` is empty; name a file or remove the key"),
                ));
            }
        }
        Ok(())
    }

    /// The gateway host key file (relative to the config).
    pub fn gateway_host_key_file(&self) -> String {
        self.gateway_host_key
            .clone()
            .unwrap_or_else(|| format!("{}-gateway-host", self.ca_key))
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
    /// `host:port` of the sshd the gateway logs in to (`access = "gateway"`):
    /// the person then connects with `ssh -o ProxyCommand='airlock connect ID --stdio'`.
    pub target_host: Option<String>,
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
        if let Some(t) = &self.target_host {
            if crate::checks::host_port(t).is_none() {
                return Err(InvalidValue::new(
                    "target_host",
                    format!("target_host `{t}` must be host:port, such as \"db1.internal:22\""),
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

/// Whether the gateway can serve an entitlement of this kind, and if not why:
/// it needs `target_host`, and the section needs `known_hosts` to check that
/// host's key; `target_host` without gateway access is a mistake.
pub fn gateway_check(config: &Config, target: &Target, gateway: bool) -> Result<(), String> {
    match (&target.target_host, gateway) {
        (None, true) => Err(
            "access through the gateway needs `target_host = \"host:port\"` (the sshd it logs in to)"
                .into(),
        ),
        (Some(_), false) => Err(
            "`target_host` is only used by the gateway: set `access = \"gateway\"` (or \"both\"), or remove it"
                .into(),
        ),
        (Some(_), true) if config.known_hosts.is_none() => Err(
            "`target_host` needs `known_hosts = \"FILE\"` in the provider's section: the gateway checks the target's host key against it (write it with `ssh-keyscan -p PORT HOST > FILE`)"
                .into(),
        ),
        _ => Ok(()),
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
