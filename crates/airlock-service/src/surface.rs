//! Where a person acted from (CLI, web UI, Slack, plain API). Only labels
//! metrics and audit data; it grants nothing, so it may come from a header.

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

impl Surface {
    /// The surface a plain API call came through, from its `User-Agent`:
    /// the CLI names itself, anything else is the API.
    pub fn from_user_agent(ua: &str) -> Surface {
        if ua.starts_with("airlock-cli/") {
            Surface::Cli
        } else {
            Surface::Api
        }
    }
}
