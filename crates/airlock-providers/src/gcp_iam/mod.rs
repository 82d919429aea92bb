//! GCP IAM provider: a grant is one binding in the resource's allow policy,
//! `role` for `user:<email>` under the condition
//! `request.time < timestamp("<not_after>")` titled `airlock <request id>`,
//! so IAM itself ends access at `not_after` even if airlock is down.
//!
//! Every change is a read-modify-write of the whole policy guarded by its
//! etag: re-read and retry (jittered exponential backoff) on a conflict, and
//! only ever add or remove airlock's own bindings on the fresh read, so
//! bindings others add meanwhile survive. Writes from one provider instance
//! are serialized, so they never conflict with each other.

mod api;
mod auth;
mod policy;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use airlock_core::{ProviderName, RequestId};
use serde_json::json;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;
use tokio::sync::Mutex;

use crate::{
    BuildError, CatalogTarget, CredentialRequest, GrantSpec, ManagedAccount, Provider,
    ProviderContext, ProviderError, StandingAccess,
};

pub mod config;
use api::{Api, ApiError};
pub use config::{Config, Target};
pub use policy::{expiry_expression, title as binding_title, TITLE_PREFIX};
use policy::{Binding, Policy};

/// API base URL when `endpoint` is not set.
pub const DEFAULT_ENDPOINT: &str = "https://cloudresourcemanager.googleapis.com";
/// Metadata server host when `GCE_METADATA_HOST` is not set.
pub const DEFAULT_METADATA_HOST: &str = "metadata.google.internal";
/// Read-modify-write attempts before giving up on a policy that keeps changing.
pub const MAX_ATTEMPTS: u32 = 10;
/// First backoff after a conflict; doubles per attempt up to [`MAX_BACKOFF`].
const BASE_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_secs(3);
/// IAM refuses longer condition descriptions.
const MAX_DESCRIPTION_CHARS: usize = 256;

/// `[providers.NAME] kind = "gcp-iam"`.
pub struct GcpIamProvider {
    name: ProviderName,
    resource: String,
    api: Api,
    /// Held across one read-modify-write: this instance's own writes never race.
    writes: Mutex<()>,
    retries: AtomicU64,
}

impl GcpIamProvider {
    /// Parses the configuration and reads the key file (if any); does not call
    /// Google (the API may be unreachable at start-up).
    pub fn new(
        name: ProviderName,
        config: &Config,
        ctx: &ProviderContext,
    ) -> Result<Self, BuildError> {
        let bad = |detail: String| BuildError::Config {
            provider: name.to_string(),
            detail,
        };
        config.validate().map_err(|e| bad(e.detail))?;
        let resource = config.resource.clone();
        let endpoint = config
            .endpoint
            .as_deref()
            .unwrap_or(DEFAULT_ENDPOINT)
            .trim_end_matches('/')
            .to_owned();
        let url = reqwest::Url::parse(&endpoint)
            .map_err(|e| bad(format!("`endpoint` is not a URL: {e}")))?;
        if !matches!(url.scheme(), "https" | "http") || url.host_str().is_none() {
            return Err(bad(format!(
                "`endpoint` must be an http(s) URL such as {DEFAULT_ENDPOINT}"
            )));
        }
        let source = match &config.credentials {
            Some(file) => {
                let path = ctx.config_dir.join(file);
                let key = auth::ServiceAccountKey::load(&path).map_err(|e| BuildError::File {
                    provider: name.to_string(),
                    detail: e.to_string(),
                })?;
                auth::Source::Key(Box::new(key))
            }
            None => auth::Source::Metadata(
                std::env::var("GCE_METADATA_HOST")
                    .ok()
                    .filter(|h| !h.is_empty())
                    .unwrap_or_else(|| DEFAULT_METADATA_HOST.into()),
            ),
        };
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(30))
            .user_agent(concat!("airlock/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| BuildError::Setup {
                provider: name.to_string(),
                detail: format!("cannot set up the HTTP client: {e}"),
            })?;
        let tokens = auth::Tokens::new(name.to_string(), source, http.clone());
        let api = Api::new(name.to_string(), endpoint, resource.clone(), http, tokens);
        Ok(GcpIamProvider {
            name,
            resource,
            api,
            writes: Mutex::new(()),
            retries: AtomicU64::new(0),
        })
    }

    /// The resource whose policy this provider edits.
    pub fn resource(&self) -> &str {
        &self.resource
    }

    /// Etag conflicts retried since start (all calls).
    pub fn retries(&self) -> u64 {
        self.retries.load(Ordering::Relaxed)
    }

    /// [`Provider::apply`], returning how many conflicts this call retried.
    pub async fn apply_counting(&self, grant: &GrantSpec) -> Result<u32, ProviderError> {
        let want = self.binding_for(grant)?;
        let title = policy::title(grant.request_id.as_str());
        self.modify(Some(&title), |p| p.ensure(&want)).await
    }

    fn refused(&self, detail: impl Into<String>) -> ProviderError {
        ProviderError::Refused {
            provider: self.name.to_string(),
            detail: detail.into(),
        }
    }

    fn role<'a>(&self, grant: &'a GrantSpec) -> Result<&'a str, ProviderError> {
        Ok(grant.target_of::<Target>(&self.name)?.role.as_str())
    }

    fn member(&self, grant: &GrantSpec) -> Result<String, ProviderError> {
        let email = grant.email.as_deref().map(str::trim).unwrap_or_default();
        if email.is_empty() {
            return Err(self.refused(format!(
                "{} has no email address, and GCP IAM grants roles to user:<email>; set `email` \
                 for this user in [[user]] or log in with OIDC",
                grant.requester
            )));
        }
        let valid = email.split_once('@').is_some_and(|(l, d)| {
            !l.is_empty() && d.contains('.') && !d.starts_with('.') && !d.ends_with('.')
        }) && !email
            .contains(|c: char| c.is_whitespace() || c == ':' || c == ',' || c.is_control());
        if !valid {
            return Err(self.refused(format!(
                "{}'s email `{email}` is not an address GCP IAM accepts",
                grant.requester
            )));
        }
        Ok(format!("user:{}", email.to_ascii_lowercase()))
    }

    fn binding_for(&self, grant: &GrantSpec) -> Result<Binding, ProviderError> {
        let not_after = grant.not_after.format(&Rfc3339).unwrap_or_default();
        let description: String = format!(
            "Granted by airlock for request {} ({} by {}); ends at {not_after}",
            grant.request_id, grant.entitlement, grant.requester
        )
        .chars()
        .take(MAX_DESCRIPTION_CHARS)
        .collect();
        Ok(Binding::airlock(
            self.role(grant)?,
            &self.member(grant)?,
            grant.request_id.as_str(),
            description,
            grant.not_after,
        ))
    }

    /// One guarded read-modify-write: `edit` changes a fresh read and says
    /// whether it changed anything; only then is the policy written back, with
    /// expired airlock bindings (except `keep`) cleaned up on the way. Returns
    /// the number of conflicts retried.
    async fn modify(
        &self,
        keep: Option<&str>,
        edit: impl Fn(&mut Policy) -> bool,
    ) -> Result<u32, ProviderError> {
        let _serial = self.writes.lock().await;
        let mut last = String::new();
        for attempt in 0..MAX_ATTEMPTS {
            if attempt > 0 {
                self.retries.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(backoff(attempt)).await;
            }
            let mut p = match self.api.get_policy().await {
                Ok(p) => p,
                Err(ApiError::Conflict(why)) => {
                    last = why;
                    continue;
                }
                Err(ApiError::Other(e)) => return Err(e),
            };
            if !edit(&mut p) {
                return Ok(attempt);
            }
            let cleaned = p.remove_expired(OffsetDateTime::now_utc(), keep);
            if cleaned > 0 {
                tracing::info!(provider = %self.name, resource = %self.resource, cleaned, "removing expired airlock bindings");
            }
            p.version = 3;
            match self.api.set_policy(&p).await {
                Ok(_) => return Ok(attempt),
                Err(ApiError::Conflict(why)) => last = why,
                Err(ApiError::Other(e)) => return Err(e),
            }
        }
        Err(ProviderError::Unreachable {
            provider: self.name.to_string(),
            detail: format!(
                "the IAM policy of {} kept changing under airlock: gave up after {MAX_ATTEMPTS} \
                 read-modify-write attempts (last: {last})",
                self.resource
            ),
        })
    }

    async fn read(&self) -> Result<Policy, ProviderError> {
        self.api.get_policy().await.map_err(|e| match e {
            ApiError::Other(e) => e,
            ApiError::Conflict(why) => ProviderError::Unreachable {
                provider: self.name.to_string(),
                detail: why,
            },
        })
    }

    fn console_url(&self) -> String {
        let (kind, id) = self.resource.split_once('/').unwrap_or(("projects", ""));
        let param = match kind {
            "folders" => "folder",
            "organizations" => "organizationId",
            _ => "project",
        };
        format!("https://console.cloud.google.com/iam-admin/iam?{param}={id}")
    }
}

/// Exponential backoff with equal jitter: half fixed, half random, so racing
/// writers spread out without ever retrying immediately.
fn backoff(attempt: u32) -> Duration {
    let ceiling = BASE_BACKOFF
        .saturating_mul(1 << attempt.min(16))
        .min(MAX_BACKOFF);
    let half = ceiling / 2;
    let mut b = [0u8; 4];
    let r = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b)
        .map(|_| u32::from_le_bytes(b))
        .unwrap_or(u32::MAX / 2);
    half + half.mul_f64(f64::from(r) / f64::from(u32::MAX))
}

#[async_trait::async_trait]
impl Provider for GcpIamProvider {
    fn name(&self) -> &ProviderName {
        &self.name
    }

    fn kind(&self) -> &'static str {
        "gcp-iam"
    }

    fn requires_email(&self) -> bool {
        true
    }

    async fn check(&self) -> Result<(), ProviderError> {
        let needed = api::permissions(&self.resource);
        let held = self
            .api
            .test_permissions(&needed)
            .await
            .map_err(|e| match e {
                ApiError::Other(e) => e,
                ApiError::Conflict(why) => self.refused(why),
            })?;
        let missing: Vec<&String> = needed.iter().filter(|p| !held.contains(p)).collect();
        if missing.is_empty() {
            Ok(())
        } else {
            Err(self.refused(format!(
                "airlock's service account lacks {} on {} (or the resource does not exist)",
                missing
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(" and "),
                self.resource
            )))
        }
    }

    async fn apply(&self, grant: &GrantSpec) -> Result<(), ProviderError> {
        self.apply_counting(grant).await.map(|_| ())
    }

    async fn remove(&self, grant: &GrantSpec) -> Result<(), ProviderError> {
        let title = policy::title(grant.request_id.as_str());
        self.modify(None, |p| p.remove_titled(&title))
            .await
            .map(|_| ())
    }

    async fn list_managed(&self) -> Result<Vec<ManagedAccount>, ProviderError> {
        let p = self.read().await?;
        Ok(p.airlock_bindings()
            .map(|b| ManagedAccount {
                account: b.account(),
                request_id: b
                    .title()
                    .and_then(|t| t.strip_prefix(TITLE_PREFIX))
                    .and_then(|id| RequestId::parse(id).ok()),
            })
            .collect())
    }

    async fn remove_account(&self, account: &str) -> Result<(), ProviderError> {
        let title = account.splitn(3, ' ').nth(2).unwrap_or_default();
        if !title.starts_with(TITLE_PREFIX) {
            return Err(self.refused(format!(
                "`{account}` is not an airlock binding (`<role> <members> airlock <request id>`); \
                 airlock only removes bindings it created"
            )));
        }
        self.modify(None, |p| p.remove_account(account))
            .await
            .map(|_| ())
    }

    async fn standing_access(
        &self,
        entitlements: &[CatalogTarget],
    ) -> Result<Vec<StandingAccess>, ProviderError> {
        let mine: Vec<(&CatalogTarget, &str)> = entitlements
            .iter()
            .filter(|e| e.provider == self.name)
            .filter_map(|e| Some((e, e.target_of::<Target>()?.role.as_str())))
            .collect();
        if mine.is_empty() {
            return Ok(Vec::new());
        }
        let p = self.read().await?;
        let mut found = Vec::new();
        for (e, role) in mine {
            for b in p
                .bindings
                .iter()
                .filter(|b| b.role == role && !b.is_airlock())
            {
                let detail = match b.title() {
                    None if b.condition.is_none() => {
                        format!("binding without condition on {}", self.resource)
                    }
                    title => format!(
                        "binding with condition `{}` (not airlock's) on {}",
                        title.unwrap_or_default(),
                        self.resource
                    ),
                };
                for m in &b.members {
                    found.push(StandingAccess {
                        entitlement: e.entitlement.to_string(),
                        principal: m.clone(),
                        detail: detail.clone(),
                    });
                }
            }
        }
        Ok(found)
    }

    async fn credentials(
        &self,
        grant: &GrantSpec,
        _request: &CredentialRequest,
    ) -> Result<serde_json::Value, ProviderError> {
        let b = self.binding_for(grant)?;
        Ok(json!({
            "resource": self.resource,
            "role": b.role,
            "member": b.members[0],
            "condition_title": b.title(),
            "condition": b.condition.as_ref().map(|c| c.expression.clone()),
            "expires_at": grant.not_after.format(&Rfc3339).unwrap_or_default(),
            "console": self.console_url(),
        }))
    }
}
