//! `kind = "postgres"`: the section and entitlement keys, their checks and the constructor.

use std::sync::Arc;

use airlock_core::ProviderName;
use serde::Deserialize;

use crate::{checks, BuildError, InvalidValue, Provider, ProviderContext};

/// The `kind` value.
pub const KIND: &str = "postgres";

/// `[providers.NAME]` with `kind = "postgres"`.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Connection URL of an account that may create roles.
    pub url: String,
    /// Prefix of the roles airlock creates and owns (drift removal only touches these).
    pub role_prefix: Option<String>,
    /// Per-grant connection limit.
    pub connection_limit: Option<u32>,
    /// Host shown to users in credentials when it differs from `url`.
    pub public_host: Option<String>,
    /// Port shown to users in credentials when it differs from `url`.
    pub public_port: Option<u16>,
    /// `"require"`: TLS for airlock's own connection and the gateway's, the
    /// server certificate verified (default `"disable"`).
    pub tls: Option<TlsMode>,
    /// PEM file of the CA that signed the server certificate (default: the Mozilla roots).
    pub tls_ca_file: Option<String>,
}

/// Whether connections to the server use TLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TlsMode {
    /// Plain TCP (the default; for loopback and private networks).
    #[default]
    Disable,
    /// TLS, with the certificate and host name verified.
    Require,
}

impl Config {
    /// Checks values beyond their types.
    pub fn validate(&self) -> Result<(), InvalidValue> {
        if self.tls_ca_file.is_some() && self.tls != Some(TlsMode::Require) {
            return Err(InvalidValue::new(
                "tls_ca_file",
                "`tls_ca_file` is only used with `tls = \"require\"`",
            ));
        }
        checks::role_prefix(&self.role_prefix)
    }
}

/// A postgres entitlement's keys.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Target {
    /// The existing role to grant.
    pub role: String,
}

impl Target {
    /// Checks values beyond their types.
    pub fn validate(&self) -> Result<(), InvalidValue> {
        checks::database_role(&self.role)
    }
}

/// A value to show when `key` is missing.
pub fn example(_key: &str) -> &'static str {
    " = \"postgres://user@host:5432/db\""
}

/// Builds the provider; does not connect.
pub fn build(
    name: &ProviderName,
    config: &Config,
    ctx: &ProviderContext,
) -> Result<Arc<dyn Provider>, BuildError> {
    Ok(Arc::new(super::PostgresProvider::new_in(
        name.clone(),
        config,
        &ctx.config_dir,
    )?))
}
