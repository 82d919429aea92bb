//! Providers apply and remove grants on real systems. Every call is idempotent
//! (the reconciler may repeat it after a crash), and every grant carries the
//! target's native expiry where the target has one.

use std::sync::Arc;

use airlock_core::config::ProviderConfig;
use airlock_core::{ProviderName, RequestId, UserName};
use time::OffsetDateTime;

pub mod postgres;

/// What a provider needs to apply or remove one grant.
#[derive(Debug, Clone)]
pub struct GrantSpec {
    /// The request this grant belongs to (names the provider-side account).
    pub request_id: RequestId,
    /// Who the grant is for.
    pub requester: UserName,
    /// The requester's email, when known.
    pub email: Option<String>,
    /// Provider role to grant (entitlement `role`).
    pub role: Option<String>,
    /// Native expiry: access must end here even if airlock is down.
    pub not_after: OffsetDateTime,
    /// Per-grant secret derived by the server (never stored); providers turn it
    /// into a password so credentials can be re-derived, not kept.
    pub secret: [u8; 32],
}

/// An account a provider holds that looks like airlock's (for drift checks).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManagedAccount {
    /// Provider-side name, e.g. the PostgreSQL role name.
    pub account: String,
    /// The request id encoded in the name, if it parses.
    pub request_id: Option<RequestId>,
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

/// The adapter boundary for one provider instance.
#[async_trait::async_trait]
pub trait Provider: Send + Sync {
    /// The configured name (`[providers.NAME]`).
    fn name(&self) -> &ProviderName;
    /// Can the target be reached and used now?
    async fn check(&self) -> Result<(), ProviderError>;
    /// Creates or refreshes the grant (idempotent).
    async fn apply(&self, grant: &GrantSpec) -> Result<(), ProviderError>;
    /// Removes the grant; an absent grant is success.
    async fn remove(&self, grant: &GrantSpec) -> Result<(), ProviderError>;
    /// Accounts on the target that airlock owns (by prefix).
    async fn list_managed(&self) -> Result<Vec<ManagedAccount>, ProviderError>;
    /// Removes an account found by `list_managed` that has no grant (drift).
    async fn remove_account(&self, account: &str) -> Result<(), ProviderError>;
    /// What the requester needs to use the grant (JSON object).
    fn credentials(&self, grant: &GrantSpec) -> serde_json::Value;
}

/// Builds the provider for `[providers.NAME]`.
pub fn build(name: &ProviderName, config: &ProviderConfig) -> Result<Arc<dyn Provider>, String> {
    match config.kind.as_str() {
        "postgres" => Ok(Arc::new(postgres::PostgresProvider::new(
            name.clone(),
            config,
        )?)),
        other => Err(format!("provider {name}: unknown kind `{other}`")),
    }
}
