//! OpenID Connect login (`[auth.oidc]`): the web flow (authorization code +
//! PKCE, `/ui/login`, `/ui/oidc/callback`, `/ui/logout`) and the CLI's device
//! flow run by the server (`/api/v1/auth/device*`), so the client secret never
//! leaves the server. Both end in an ordinary airlock session token.

mod claims;
pub(crate) mod device;
mod device_pace;
mod idp;
pub mod verify;
mod web;

use std::path::Path;
use std::sync::Arc;

use airlock_core::config::Config;
use airlock_core::notify::SecretSource;
use airlock_core::oidc::OidcConfig;
use axum::http::StatusCode;
use axum::Router;

use crate::app::App;
use crate::problem::ApiError;

pub use claims::{is_mfa, principal};
pub use idp::Idp;

/// Why a login failed.
#[derive(Debug, thiserror::Error)]
pub enum OidcError {
    /// The provider cannot be reached or answered nonsense; retrying later may help.
    #[error("{0}")]
    Unavailable(String),
    /// The ID token failed verification.
    #[error("{0}")]
    Token(verify::VerifyError),
    /// The provider or the claims refused the login.
    #[error("{0}")]
    Refused(String),
    /// The identity checks refused this person (a bound or group name, a lock): 403.
    #[error("{0}")]
    Forbidden(String),
    /// A bug or local failure.
    #[error("{0}")]
    Internal(String),
}

impl From<OidcError> for ApiError {
    fn from(e: OidcError) -> Self {
        match e {
            OidcError::Unavailable(m) => ApiError {
                retry_after: Some(5),
                ..ApiError::new(StatusCode::SERVICE_UNAVAILABLE, m)
            },
            OidcError::Token(v) => ApiError::unauthorized(format!("login refused: {v}")),
            OidcError::Refused(m) | OidcError::Forbidden(m) => {
                ApiError::new(StatusCode::FORBIDDEN, m)
            }
            OidcError::Internal(m) => ApiError::internal(m),
        }
    }
}

/// OIDC login state: the configuration and the provider client.
pub struct Oidc {
    pub config: OidcConfig,
    pub idp: Idp,
    device_starts: device_pace::StartLimiter,
    device_polls: device_pace::PollLog,
}

impl Oidc {
    /// Builds the login client from `[auth.oidc]` (None when not configured).
    pub fn build(
        config: &Config,
        config_dir: &Path,
    ) -> Result<Option<Arc<Oidc>>, airlock_service::SetupError> {
        let Some(c) = config.auth.oidc.as_ref() else {
            return Ok(None);
        };
        let source = match (&c.client_secret, &c.client_secret_file) {
            (Some(s), _) => Some(SecretSource::Inline(s.clone())),
            (None, Some(f)) => Some(SecretSource::File(f.clone())),
            (None, None) => None,
        };
        let secret = source
            .map(|s| airlock_service::notify::read_secret(config_dir, &s))
            .transpose()
            .map_err(|e| format!("[auth.oidc] client_secret: {e}"))?;
        Ok(Some(Arc::new(Oidc {
            idp: Idp::new(
                &c.issuer,
                &c.client_id,
                secret,
                std::time::Duration::from_secs(c.jwks_ttl.as_secs()),
            )?,
            config: c.clone(),
            device_starts: Default::default(),
            device_polls: Default::default(),
        })))
    }
}

/// The app's OIDC state, or a 404 saying how to turn login on.
pub(crate) fn configured(app: &App) -> Result<&Arc<Oidc>, ApiError> {
    app.oidc.as_ref().ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "OpenID Connect login is not configured on this server: add [auth.oidc] (see docs/oidc.md), or use a token (AIRLOCK_TOKEN)",
        )
    })
}

/// Routes for web and CLI login.
pub fn routes() -> Router<Arc<App>> {
    web::routes().merge(device::routes())
}

#[cfg(test)]
mod tests;
