//! Cloud Resource Manager's IAM methods over HTTPS (`POST
//! {endpoint}/v3/{resource}:getIamPolicy`, `:setIamPolicy`,
//! `:testIamPermissions`) with Google's error bodies mapped to
//! [`ProviderError`]: etag conflicts are reported separately so the caller
//! can re-read and retry.

use reqwest::StatusCode;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value};

use super::auth::Tokens;
use super::policy::Policy;
use crate::ProviderError;

/// A failed call: a concurrent-modification conflict, or anything else.
pub enum ApiError {
    /// HTTP 409 ABORTED or 412 FAILED_PRECONDITION: the policy changed since it was read.
    Conflict(String),
    /// Classified failure.
    Other(ProviderError),
}

impl From<ProviderError> for ApiError {
    fn from(e: ProviderError) -> Self {
        ApiError::Other(e)
    }
}

/// The API of one resource.
pub struct Api {
    provider: String,
    endpoint: String,
    resource: String,
    http: reqwest::Client,
    tokens: Tokens,
}

#[derive(Deserialize)]
struct GoogleError {
    error: GoogleErrorBody,
}

#[derive(Deserialize)]
struct GoogleErrorBody {
    #[serde(default)]
    message: String,
    #[serde(default)]
    status: String,
}

impl Api {
    /// Calls for `resource` at `endpoint` (no trailing slash).
    pub fn new(
        provider: String,
        endpoint: String,
        resource: String,
        http: reqwest::Client,
        tokens: Tokens,
    ) -> Api {
        Api {
            provider,
            endpoint,
            resource,
            http,
            tokens,
        }
    }

    fn refused(&self, detail: String) -> ProviderError {
        ProviderError::Refused {
            provider: self.provider.clone(),
            detail,
        }
    }

    fn unreachable(&self, detail: String) -> ProviderError {
        ProviderError::Unreachable {
            provider: self.provider.clone(),
            detail,
        }
    }

    /// The resource's policy, in version 3 form.
    pub async fn get_policy(&self) -> Result<Policy, ApiError> {
        self.call(
            "getIamPolicy",
            json!({"options": {"requestedPolicyVersion": 3}}),
        )
        .await
    }

    /// Writes `policy` (carrying the etag it was read with).
    pub async fn set_policy(&self, policy: &Policy) -> Result<Policy, ApiError> {
        self.call("setIamPolicy", json!({ "policy": policy })).await
    }

    /// Which of `permissions` the caller holds on the resource.
    pub async fn test_permissions(&self, permissions: &[String]) -> Result<Vec<String>, ApiError> {
        #[derive(Deserialize)]
        struct Held {
            #[serde(default)]
            permissions: Vec<String>,
        }
        let held: Held = self
            .call("testIamPermissions", json!({ "permissions": permissions }))
            .await?;
        Ok(held.permissions)
    }

    /// One POST, retried once with a fresh token if the API says the cached
    /// one is no longer valid.
    async fn call<T: DeserializeOwned>(&self, method: &str, body: Value) -> Result<T, ApiError> {
        let url = format!("{}/v3/{}:{method}", self.endpoint, self.resource);
        let mut fresh = false;
        loop {
            let token = self.tokens.get().await?;
            let resp = self
                .http
                .post(&url)
                .bearer_auth(&token)
                .json(&body)
                .send()
                .await
                .map_err(|e| self.unreachable(format!("{method} on {}: {e}", self.resource)))?;
            let status = resp.status();
            if status.is_success() {
                return resp.json().await.map_err(|e| {
                    ApiError::Other(self.unreachable(format!(
                        "{method} on {}: unreadable answer: {e}",
                        self.resource
                    )))
                });
            }
            let text = resp.text().await.unwrap_or_default();
            let (message, code) = match serde_json::from_str::<GoogleError>(&text) {
                Ok(g) => (g.error.message, g.error.status),
                Err(_) => (text.chars().take(200).collect(), String::new()),
            };
            if status == StatusCode::UNAUTHORIZED && !fresh {
                self.tokens.invalidate(&token).await;
                fresh = true;
                continue;
            }
            return Err(self.classify(method, status, &code, &message));
        }
    }

    fn classify(&self, method: &str, status: StatusCode, code: &str, message: &str) -> ApiError {
        let what = format!(
            "{method} on {} failed (HTTP {} {code}): {message}",
            self.resource,
            status.as_u16()
        );
        match status.as_u16() {
            409 | 412 => ApiError::Conflict(what),
            401 => ApiError::Other(self.refused(format!(
                "{what}; the service account's credentials were not accepted"
            ))),
            403 => ApiError::Other(self.refused(format!(
                "{what}; airlock's service account needs {} on {}",
                permissions(&self.resource).join(" and "),
                self.resource
            ))),
            429 | 500..=599 => ApiError::Other(self.unreachable(what)),
            _ => ApiError::Other(self.refused(what)),
        }
    }
}

/// The permissions airlock needs on `resource` (`resourcemanager.projects.getIamPolicy`, ...).
pub fn permissions(resource: &str) -> Vec<String> {
    let kind = resource.split('/').next().unwrap_or("projects");
    ["getIamPolicy", "setIamPolicy"]
        .iter()
        .map(|verb| format!("resourcemanager.{kind}.{verb}"))
        .collect()
}
