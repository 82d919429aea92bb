//! Where a person acted from (CLI, web UI, Slack, plain API). Only labels
//! metrics and audit data; it grants nothing, so it may come from a header.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;

/// The surface a review or request came through.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Surface {
    /// The `airlock` CLI (its User-Agent).
    Cli,
    /// The web UI.
    Web,
    /// A Slack button.
    Slack,
    /// Any other API client.
    Api,
}

impl Surface {
    /// Metric label and audit value.
    pub fn as_str(self) -> &'static str {
        match self {
            Surface::Cli => "cli",
            Surface::Web => "web",
            Surface::Slack => "slack",
            Surface::Api => "api",
        }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Surface {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let ua = parts
            .headers
            .get(axum::http::header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        Ok(if ua.starts_with("airlock-cli/") {
            Surface::Cli
        } else {
            Surface::Api
        })
    }
}
