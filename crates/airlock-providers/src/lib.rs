//! Providers apply and remove grants on real systems. Every call is idempotent
//! (the reconciler may repeat it after a crash), and every grant carries the
//! target's native expiry where the target has one.

use std::path::PathBuf;
use std::sync::Arc;

use airlock_core::{EntitlementName, ProviderName, RequestId, UserName};
use time::OffsetDateTime;

mod checks;
pub mod command;
mod errors;
pub mod gateway;
pub mod gcp_iam;
pub mod kubernetes;
pub mod mysql;
pub mod postgres;
pub mod registry;
pub mod ssh;
pub mod tls;
mod validated;

pub use errors::{BuildError, ConfigError, InvalidValue};
pub use registry::{EntitlementTarget, KindTarget, ProviderConfig, KINDS};
pub use validated::ValidatedConfig;

/// What a provider needs to apply or remove one grant.
#[derive(Debug, Clone)]
pub struct GrantSpec {
    /// The request this grant belongs to (names the provider-side account).
    pub request_id: RequestId,
    /// Who the grant is for.
    pub requester: UserName,
    /// The requester's email, when known.
    pub email: Option<String>,
    /// The entitlement granted.
    pub entitlement: EntitlementName,
    /// Everything provider-specific the entitlement says (role, principals, ClusterRole, ...),
    /// typed by the provider's kind.
    pub target: EntitlementTarget,
    /// Native expiry: access must end here even if airlock is down.
    pub not_after: OffsetDateTime,
    /// Per-grant secret derived by the server (never stored); providers turn it
    /// into a password so credentials can be re-derived, not kept.
    pub secret: [u8; 32],
}

impl GrantSpec {
    /// The target as the kind `T` reads it; refused when the entitlement was
    /// written for another kind (the catalog ties each to one provider, so
    /// this means a server bug).
    pub fn target_of<T: KindTarget>(&self, provider: &ProviderName) -> Result<&T, ProviderError> {
        T::of(&self.target).ok_or_else(|| ProviderError::Refused {
            provider: provider.to_string(),
            detail: format!(
                "entitlement {} is not configured for this provider's kind (a server bug, please report it)",
                self.entitlement
            ),
        })
    }
}

/// An entitlement of the catalog and what it grants, for read-only checks
/// such as [`Provider::standing_access`].
#[derive(Debug, Clone, PartialEq)]
pub struct CatalogTarget {
    /// The entitlement.
    pub entitlement: EntitlementName,
    /// Its provider.
    pub provider: ProviderName,
    /// What it grants, typed by the provider's kind.
    pub target: EntitlementTarget,
}

impl CatalogTarget {
    /// The target as the kind `T` reads it, or `None` for another kind.
    pub fn target_of<T: KindTarget>(&self) -> Option<&T> {
        T::of(&self.target)
    }

    /// `(entitlement, role)` for each entitlement of kind `T`: what the
    /// database providers compare their role memberships with.
    pub fn roles_of<T: KindTarget>(
        entitlements: &[CatalogTarget],
        role: impl Fn(&T) -> &str,
    ) -> Vec<(String, String)> {
        entitlements
            .iter()
            .filter_map(|e| {
                Some((
                    e.entitlement.to_string(),
                    role(e.target_of::<T>()?).to_string(),
                ))
            })
            .collect()
    }
}

/// An account a provider holds that looks like airlock's (for drift checks).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManagedAccount {
    /// Provider-side name, e.g. the PostgreSQL role name.
    pub account: String,
    /// The request id encoded in the name, if it parses.
    pub request_id: Option<RequestId>,
}

/// Access to an entitlement's role that exists on the target *outside* airlock:
/// standing privilege that defeats zero-touch. Reported, never removed.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct StandingAccess {
    /// The entitlement whose role is held.
    pub entitlement: String,
    /// Who holds it, in the target's terms (`alice`, `user:bob@example.com`, `User oidc:carol`).
    pub principal: String,
    /// How it is held (e.g. `member of payments_writer`, `binding without condition`).
    pub detail: String,
}

/// Input to [`Provider::credentials`] beyond the grant itself.
#[derive(Debug, Clone, Default)]
pub struct CredentialRequest {
    /// The requester's public key (ssh: the key to certify), as an OpenSSH line.
    pub public_key: Option<String>,
    /// A unique serial allocated by the store when the provider is a [`CertificateAuthority`].
    pub serial: Option<u64>,
}

/// Where a provider finds the files its configuration names.
#[derive(Debug, Clone)]
pub struct ProviderContext {
    /// The configuration file's folder: relative paths (`ca_key`, `kubeconfig`, ...) start here.
    pub config_dir: PathBuf,
    /// The server's data folder (keys, state).
    pub data_dir: PathBuf,
}

/// Provider failures, split by whether retrying may help.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ProviderError {
    /// The target cannot be reached now; retry with backoff.
    #[error("provider {provider} unreachable: {detail}")]
    Unreachable { provider: String, detail: String },
    /// The target refused (e.g. the role does not exist); retrying will not help.
    #[error("provider {provider} refused: {detail}")]
    Refused { provider: String, detail: String },
}

impl ProviderError {
    /// Whether a retry may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, ProviderError::Unreachable { .. })
    }
}

/// One check of `airlock doctor`: a privilege or setting airlock needs on
/// the target, whether it holds, and the statement that fixes it if not.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Finding {
    /// What was checked, e.g. `CREATEROLE`.
    pub check: String,
    /// Whether it holds.
    pub ok: bool,
    /// What was found, in words.
    pub detail: String,
    /// What to run on the target to fix it (when not `ok`).
    pub fix: Option<String>,
}

/// The adapter boundary for one provider instance.
#[async_trait::async_trait]
pub trait Provider: Send + Sync {
    /// The configured name (`[providers.NAME]`).
    fn name(&self) -> &ProviderName;
    /// The configured kind (`postgres`, `ssh`, ...).
    fn kind(&self) -> &'static str;
    /// Can the target be reached and used now? Called at start-up and at request time.
    async fn check(&self) -> Result<(), ProviderError>;
    /// Creates or refreshes the grant (idempotent).
    async fn apply(&self, grant: &GrantSpec) -> Result<(), ProviderError>;
    /// Removes the grant; an absent grant is success.
    async fn remove(&self, grant: &GrantSpec) -> Result<(), ProviderError>;
    /// Accounts on the target that airlock owns (by prefix or label).
    async fn list_managed(&self) -> Result<Vec<ManagedAccount>, ProviderError>;
    /// Removes an account found by `list_managed` that has no grant (drift).
    async fn remove_account(&self, account: &str) -> Result<(), ProviderError>;
    /// Who holds the given entitlements' roles outside airlock (read-only).
    async fn standing_access(
        &self,
        _entitlements: &[CatalogTarget],
    ) -> Result<Vec<StandingAccess>, ProviderError> {
        Ok(Vec::new())
    }
    /// Every privilege airlock needs on the target for these entitlements,
    /// checked (read-only) for `airlock doctor`; kinds without checks beyond
    /// [`check`](Self::check) return none.
    async fn doctor(&self, _entitlements: &[CatalogTarget]) -> Result<Vec<Finding>, ProviderError> {
        Ok(Vec::new())
    }
    /// What the requester needs to use the grant (JSON object).
    async fn credentials(
        &self,
        grant: &GrantSpec,
        request: &CredentialRequest,
    ) -> Result<serde_json::Value, ProviderError>;
    /// True when a grant names the requester by email (e.g. `user:EMAIL` in
    /// GCP IAM), so requests from principals without one are refused up front.
    fn requires_email(&self) -> bool {
        false
    }
    /// How the gateway logs in to the target as this grant, for kinds whose
    /// protocol it speaks (see [`gateway::SPEAKS`]); `None` for the rest.
    fn gateway_login(
        &self,
        _grant: &GrantSpec,
    ) -> Result<Option<gateway::Upstream>, ProviderError> {
        Ok(None)
    }
    /// Set when `credentials` mints certificates: each needs a store-allocated
    /// serial (recorded, so it can be revoked) and the CA publishes a revocation list.
    fn certificate_authority(&self) -> Option<&dyn CertificateAuthority> {
        None
    }
}

/// A provider that signs certificates (ssh): its public key and revocation list.
pub trait CertificateAuthority: Send + Sync {
    /// The CA public key as one OpenSSH line (for sshd's `TrustedUserCAKeys`).
    fn public_key(&self) -> String;
    /// A revocation list naming `serials`, in the target's format (an OpenSSH
    /// KRL for sshd's `RevokedKeys`), signed by the CA where the format allows.
    fn revocation_list(&self, serials: &[u64]) -> Result<Vec<u8>, ProviderError>;
}

/// RFC 3339 in UTC, floored to the second, so a target's own expiry is never
/// later than `not_after`; `None` outside years 0-9999.
pub fn rfc3339_utc(t: OffsetDateTime) -> Option<String> {
    t.to_offset(time::UtcOffset::UTC)
        .replace_nanosecond(0)
        .ok()?
        .format(&time::format_description::well_known::Rfc3339)
        .ok()
}

/// The key id of the certificate minted for a grant: names the user and the request.
pub fn certificate_key_id(grant: &GrantSpec) -> String {
    format!("airlock:{}:{}", grant.requester, grant.request_id)
}

/// Builds the provider for `[providers.NAME]` from its validated configuration.
pub fn build(
    name: &ProviderName,
    config: &ProviderConfig,
    ctx: &ProviderContext,
) -> Result<Arc<dyn Provider>, BuildError> {
    config.build(name, ctx)
}
