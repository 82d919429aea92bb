//! `[auth.oidc]`: people log in with OpenID Connect. This module holds the
//! configuration and the pure mapping from verified ID-token claims to a
//! principal (name, groups, MFA); HTTP, discovery and signature checks are
//! the server's job.

use serde::Deserialize;

/// `[auth]` table.
#[derive(Deserialize, Debug, Clone, Default)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// `[auth.oidc]`: log in through an OpenID Connect provider.
    pub oidc: Option<OidcConfig>,
}

/// `[auth.oidc]`.
#[derive(Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub struct OidcConfig {
    /// Issuer URL; discovery reads `{issuer}/.well-known/openid-configuration`.
    pub issuer: String,
    /// Client id registered with the provider (the ID token's audience).
    pub client_id: String,
    /// Client secret (confidential client), if the provider issued one.
    pub client_secret: Option<String>,
    /// File holding the client secret instead.
    pub client_secret_file: Option<String>,
    /// Scopes asked for.
    #[serde(default = "default_scopes")]
    pub scopes: Vec<String>,
    /// Claim holding the user's groups (a list of strings).
    #[serde(default = "default_groups_claim")]
    pub groups_claim: String,
    /// Claim holding the airlock user name.
    #[serde(default = "default_username_claim")]
    pub username_claim: String,
    /// Members of these groups are airlock admins.
    #[serde(default)]
    pub admin_groups: Vec<String>,
    /// `acr` values that count as a multi-factor login (besides `amr` naming a second factor).
    #[serde(default = "default_mfa_acr_values")]
    pub mfa_acr_values: Vec<String>,
    /// The provider's signing keys are fetched again after this long, so a
    /// key the provider withdrew stops being accepted.
    #[serde(default = "default_jwks_ttl")]
    pub jwks_ttl: crate::Span,
    /// Whether the CLI may log in with the device authorization grant
    /// (`airlock login`); `false` leaves only the web login.
    #[serde(default = "default_device_flow")]
    pub device_flow: bool,
    /// The least time between two device-login polls the server accepts and
    /// tells the CLI (the provider's `interval` wins when longer).
    #[serde(default = "default_device_poll_interval")]
    pub device_poll_interval: crate::Span,
}

/// Longest device-login poll interval (the CLI waits at most this long between polls).
pub const MAX_DEVICE_POLL_INTERVAL_SECS: u64 = 60;

fn default_device_flow() -> bool {
    true
}

fn default_device_poll_interval() -> crate::Span {
    // RFC 8628 §3.2: clients wait 5 s when the provider names no interval.
    crate::Span::from_secs(5).expect("5 is a valid span")
}

fn default_jwks_ttl() -> crate::Span {
    crate::Span::from_secs(3600).expect("3600 is a valid span")
}

fn default_mfa_acr_values() -> Vec<String> {
    // OpenID PAPE multi-factor, and the phishing-resistant levels of the
    // OpenID EAP ACR values spec (used by e.g. Okta).
    [
        "http://schemas.openid.net/pape/policies/2007/06/multi-factor",
        "phr",
        "phrh",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

fn default_scopes() -> Vec<String> {
    ["openid", "profile", "email", "groups"]
        .iter()
        .map(|s| s.to_string())
        .collect()
}
fn default_groups_claim() -> String {
    "groups".into()
}
fn default_username_claim() -> String {
    "preferred_username".into()
}

impl OidcConfig {
    /// Checks what parsing alone cannot.
    pub fn validate(&self) -> Result<(), crate::config::ConfigError> {
        let bad = |m: String| crate::config::ConfigError::Invalid(m);
        let ctx = "[auth.oidc]";
        let local = self.issuer.starts_with("http://127.0.0.1")
            || self.issuer.starts_with("http://localhost")
            || self.issuer.starts_with("http://[::1]");
        if !(self.issuer.starts_with("https://") || local) {
            return Err(bad(format!(
                "{ctx}: issuer `{}` must be an https URL (http only on loopback)",
                self.issuer
            )));
        }
        if self.client_id.is_empty() {
            return Err(bad(format!("{ctx}: client_id is empty")));
        }
        if self.client_secret.is_some() && self.client_secret_file.is_some() {
            return Err(bad(format!(
                "{ctx}: set `client_secret` or `client_secret_file`, not both"
            )));
        }
        if self.device_poll_interval.as_secs() > MAX_DEVICE_POLL_INTERVAL_SECS {
            return Err(bad(format!(
                "{ctx}: device_poll_interval must be at most {MAX_DEVICE_POLL_INTERVAL_SECS}s"
            )));
        }
        if !self.scopes.iter().any(|s| s == "openid") {
            return Err(bad(format!("{ctx}: scopes must include `openid`")));
        }
        Ok(())
    }
}
