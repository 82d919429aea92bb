//! The configuration file (`airlock serve --config FILE`): server settings and
//! the catalog (users, groups, providers, entitlements). Parsed from text here;
//! reading files is the binary's job. Unknown keys are refused with their line.

use std::collections::{BTreeMap, BTreeSet};

use regex::Regex;
use serde::Deserialize;

use crate::approval::ApprovalRule;
use crate::names::{EntitlementName, GroupName, ProviderName, UserName};
use crate::principal::Principal;
use crate::Span;

/// A configuration error with enough context to fix the file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// TOML syntax, a wrong type or an unknown key (the message names key and line).
    #[error("{0}")]
    Toml(#[from] toml::de::Error),
    /// The file parsed but says something inconsistent.
    #[error("{0}")]
    Invalid(String),
}

fn invalid(msg: impl Into<String>) -> ConfigError {
    ConfigError::Invalid(msg.into())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    server: ServerConfig,
    #[serde(default)]
    user: Vec<UserEntry>,
    #[serde(default)]
    group: Vec<GroupEntry>,
    #[serde(default)]
    providers: BTreeMap<String, ProviderConfig>,
    #[serde(default)]
    entitlement: Vec<RawEntitlement>,
}

/// `[server]`: where to listen and what to store in.
#[derive(Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// `host:port` to listen on.
    #[serde(default = "default_listen")]
    pub listen: String,
    /// `sqlite:///path/to.db` or `postgres://user@host:port/db`; default: SQLite in `data_dir`.
    pub database: Option<String>,
    /// Optional Cedar policy file, relative to the configuration file.
    pub policy: Option<String>,
    /// Keys (audit signing, password derivation) live here; default: the config file's folder.
    pub data_dir: Option<String>,
    /// URL people use to reach this server (shown in messages).
    pub public_url: Option<String>,
    /// Sign an audit checkpoint every this many events.
    #[serde(default = "default_checkpoint_every")]
    pub checkpoint_every: u64,
    /// How often the reconciler compares providers with the store for drift.
    #[serde(default = "default_drift_interval")]
    pub drift_interval: Span,
}

fn default_listen() -> String {
    "127.0.0.1:8080".into()
}
fn default_checkpoint_every() -> u64 {
    1000
}
fn default_drift_interval() -> Span {
    Span::from_secs(60).expect("60 is a valid span")
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: default_listen(),
            database: None,
            policy: None,
            data_dir: None,
            public_url: None,
            checkpoint_every: default_checkpoint_every(),
            drift_interval: default_drift_interval(),
        }
    }
}

/// `[[user]]`: a static user.
#[derive(Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub struct UserEntry {
    pub name: UserName,
    pub email: Option<String>,
}

/// `[[group]]`: a named set of users.
#[derive(Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub struct GroupEntry {
    pub name: GroupName,
    #[serde(default)]
    pub members: Vec<UserName>,
}

/// `[providers.NAME]`: one provider instance. Keys not meaningful for `kind`
/// are refused at validation.
#[derive(Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub struct ProviderConfig {
    /// Which adapter: `postgres`.
    pub kind: String,
    /// Connection URL (postgres).
    pub url: Option<String>,
    /// Prefix of the accounts airlock creates and owns (drift removal only touches these).
    pub role_prefix: Option<String>,
    /// Per-grant connection limit (postgres).
    pub connection_limit: Option<u32>,
    /// Host/port shown to users in credentials when they differ from `url`.
    pub public_host: Option<String>,
    pub public_port: Option<u16>,
}

/// Provider kinds this build knows.
pub const PROVIDER_KINDS: &[&str] = &["postgres"];

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawApprovals {
    count: u32,
    #[serde(default)]
    reviewers: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawReason {
    #[serde(default)]
    required: bool,
    pattern: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEntitlement {
    name: EntitlementName,
    #[serde(default)]
    description: String,
    provider: ProviderName,
    role: Option<String>,
    max_duration: Span,
    approvals: Option<RawApprovals>,
    reason: Option<RawReason>,
    #[serde(default)]
    breakglass: bool,
    approval_timeout: Option<Span>,
    requesters: Option<Vec<String>>,
}

/// What a request's reason must look like.
#[derive(Debug, Clone)]
pub struct ReasonRule {
    /// A reason must be given.
    pub required: bool,
    /// If set, the reason must match (searched, anchor with `^` as needed).
    pub pattern: Option<Regex>,
}

impl ReasonRule {
    /// Checks a reason against the rule.
    pub fn check(&self, reason: &str) -> Result<(), crate::Error> {
        if reason.len() > MAX_REASON_LEN {
            return Err(crate::Error::invalid(
                "reason",
                format!("longer than {MAX_REASON_LEN} bytes"),
            ));
        }
        if reason.chars().any(|c| c.is_control()) {
            return Err(crate::Error::invalid(
                "reason",
                "contains control characters",
            ));
        }
        if self.required && reason.trim().is_empty() {
            return Err(crate::Error::invalid(
                "reason",
                "a reason is required for this entitlement",
            ));
        }
        if let Some(p) = &self.pattern {
            if !p.is_match(reason) {
                return Err(crate::Error::invalid(
                    "reason",
                    format!(
                        "`{reason}` does not match the required pattern `{}`",
                        p.as_str()
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// Longest reason accepted.
pub const MAX_REASON_LEN: usize = 1024;

/// Default approval window when an entitlement sets none.
pub const DEFAULT_APPROVAL_TIMEOUT_SECS: u64 = 24 * 3600;

/// A grantable privilege from the catalog.
#[derive(Debug, Clone)]
pub struct Entitlement {
    pub name: EntitlementName,
    pub description: String,
    pub provider: ProviderName,
    /// Provider role to grant (postgres: an existing role).
    pub role: Option<String>,
    pub max_duration: Span,
    pub approvals: ApprovalRule,
    pub reason: ReasonRule,
    pub breakglass: bool,
    /// Pending requests lapse after this.
    pub approval_timeout: Span,
    /// Users or groups who may ask; empty = anyone authenticated.
    pub requesters: Vec<String>,
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub server: ServerConfig,
    pub users: BTreeMap<UserName, UserEntry>,
    pub groups: BTreeMap<GroupName, BTreeSet<UserName>>,
    pub providers: BTreeMap<ProviderName, ProviderConfig>,
    pub entitlements: BTreeMap<EntitlementName, Entitlement>,
}

impl Config {
    /// Parses and validates configuration text.
    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        let raw: RawConfig = toml::from_str(text)?;
        let mut users = BTreeMap::new();
        for u in raw.user {
            if users.insert(u.name.clone(), u.clone()).is_some() {
                return Err(invalid(format!("[[user]] `{}` is defined twice", u.name)));
            }
        }
        let mut groups: BTreeMap<GroupName, BTreeSet<UserName>> = BTreeMap::new();
        for g in raw.group {
            if groups
                .insert(g.name.clone(), g.members.into_iter().collect())
                .is_some()
            {
                return Err(invalid(format!("[[group]] `{}` is defined twice", g.name)));
            }
        }
        let mut providers = BTreeMap::new();
        for (name, p) in raw.providers {
            let pname = ProviderName::parse(&name)
                .map_err(|e| invalid(format!("[providers.{name}]: {e}")))?;
            validate_provider(&name, &p)?;
            providers.insert(pname, p);
        }
        let mut entitlements = BTreeMap::new();
        for e in raw.entitlement {
            let ctx = format!("[[entitlement]] `{}`", e.name);
            let provider = providers.get(&e.provider).ok_or_else(|| {
                invalid(format!(
                    "{ctx}: provider `{}` is not defined under [providers]",
                    e.provider
                ))
            })?;
            if provider.kind == "postgres" && e.role.is_none() {
                return Err(invalid(format!(
                    "{ctx}: provider `{}` is postgres, so `role` is required",
                    e.provider
                )));
            }
            let approvals = match (e.approvals, e.breakglass) {
                (Some(a), _) => {
                    if a.count > 0 && a.reviewers.is_empty() {
                        return Err(invalid(format!("{ctx}: approvals.count is {} but approvals.reviewers is empty", a.count)));
                    }
                    if a.count > 16 {
                        return Err(invalid(format!("{ctx}: approvals.count {} is above 16", a.count)));
                    }
                    ApprovalRule { count: a.count, reviewers: a.reviewers }
                }
                (None, true) => ApprovalRule { count: 0, reviewers: vec![] },
                (None, false) => {
                    return Err(invalid(format!(
                        "{ctx}: `approvals = {{ count = N, reviewers = [..] }}` is required (or set `breakglass = true`)"
                    )))
                }
            };
            let reason = match e.reason {
                None => ReasonRule {
                    required: false,
                    pattern: None,
                },
                Some(r) => ReasonRule {
                    required: r.required,
                    pattern: r
                        .pattern
                        .map(|p| {
                            Regex::new(&p)
                                .map_err(|err| invalid(format!("{ctx}: reason.pattern: {err}")))
                        })
                        .transpose()?,
                },
            };
            let ent = Entitlement {
                name: e.name.clone(),
                description: e.description,
                provider: e.provider,
                role: e.role,
                max_duration: e.max_duration,
                approvals,
                reason: ReasonRule {
                    // Break-glass always demands a reason.
                    required: reason.required || e.breakglass,
                    pattern: reason.pattern,
                },
                breakglass: e.breakglass,
                approval_timeout: e
                    .approval_timeout
                    .unwrap_or(Span::from_secs(DEFAULT_APPROVAL_TIMEOUT_SECS).expect("valid")),
                requesters: e.requesters.unwrap_or_default(),
            };
            if entitlements.insert(e.name.clone(), ent).is_some() {
                return Err(invalid(format!("{ctx} is defined twice")));
            }
        }
        Ok(Config {
            server: raw.server,
            users,
            groups,
            providers,
            entitlements,
        })
    }

    /// Looks up an entitlement by name, as a caller-facing error when missing.
    pub fn entitlement(&self, name: &str) -> Result<&Entitlement, crate::Error> {
        EntitlementName::parse(name)
            .ok()
            .and_then(|n| self.entitlements.get(&n))
            .ok_or_else(|| {
                crate::Error::not_found(format!(
                    "entitlement `{name}` (list them with GET /api/v1/entitlements)"
                ))
            })
    }

    /// Builds the principal for `name`: catalog groups, `extra_groups` and the catalog email.
    pub fn principal(&self, name: UserName, extra_groups: &[GroupName], admin: bool) -> Principal {
        let mut groups: BTreeSet<GroupName> = self
            .groups
            .iter()
            .filter(|(_, members)| members.contains(&name))
            .map(|(g, _)| g.clone())
            .collect();
        groups.extend(extra_groups.iter().cloned());
        let email = self.users.get(&name).and_then(|u| u.email.clone());
        Principal {
            name,
            groups,
            email,
            admin,
            mfa: false,
        }
    }
}

fn validate_provider(name: &str, p: &ProviderConfig) -> Result<(), ConfigError> {
    let ctx = format!("[providers.{name}]");
    match p.kind.as_str() {
        "postgres" => {
            if p.url.is_none() {
                return Err(invalid(format!(
                    "{ctx}: kind postgres needs `url = \"postgres://user@host:5432/db\"`"
                )));
            }
        }
        other => {
            return Err(invalid(format!(
                "{ctx}: unknown kind `{other}` (known: {})",
                PROVIDER_KINDS.join(", ")
            )))
        }
    }
    if let Some(prefix) = &p.role_prefix {
        let ok = !prefix.is_empty()
            && prefix.len() <= 24
            && prefix
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        if !ok {
            return Err(invalid(format!(
                "{ctx}: role_prefix must be 1-24 of a-z 0-9 _"
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    pub const SAMPLE: &str = r#"
[server]
listen = "127.0.0.1:8080"
database = "sqlite:///var/lib/airlock/airlock.db"   # or postgres://user@host:5432/db

[[user]]                          # optional: static users (OIDC users need no entry)
name = "alice"
email = "alice@example.com"       # used by providers (e.g. GCP `user:EMAIL`) and notifications

[[group]]
name = "payments-eng"
members = ["alice", "bob"]

[providers.pg-main]
kind = "postgres"
url = "postgres://postgres@127.0.0.1:5432/postgres"

[[entitlement]]
name = "payments-db-write"
description = "Write access to the payments table"
provider = "pg-main"
role = "payments_writer"          # the existing PostgreSQL role to grant
max_duration = "1h"
approvals = { count = 1, reviewers = ["payments-eng"] }
reason = { required = true, pattern = "^(INC|CHG)-[0-9]+" }
"#;

    #[test]
    fn sample_configuration_parses_as_is() {
        let c = Config::parse(SAMPLE).unwrap();
        let e = c.entitlement("payments-db-write").unwrap();
        assert_eq!(e.max_duration.as_secs(), 3600);
        assert_eq!(e.approvals.count, 1);
        assert!(e.reason.check("INC-42 fix").is_ok());
        assert!(e.reason.check("fix it").is_err());
        let alice = c.principal(UserName::parse("alice").unwrap(), &[], false);
        assert!(alice.matches("payments-eng"));
        assert_eq!(alice.email.as_deref(), Some("alice@example.com"));
    }

    #[test]
    fn unknown_key_is_named_with_its_line() {
        let text = SAMPLE.replace(
            "max_duration = \"1h\"",
            "max_duration = \"1h\"\nmax_durration = \"2h\"",
        );
        let err = Config::parse(&text).unwrap_err().to_string();
        assert!(err.contains("max_durration"), "{err}");
        assert!(err.contains("line 24"), "{err}");
    }

    #[test]
    fn undefined_provider_and_missing_approvals_are_refused() {
        let text = SAMPLE.replace("provider = \"pg-main\"", "provider = \"pg-other\"");
        assert!(Config::parse(&text)
            .unwrap_err()
            .to_string()
            .contains("pg-other"));
        let text = SAMPLE.replace(
            "approvals = { count = 1, reviewers = [\"payments-eng\"] }\n",
            "",
        );
        assert!(Config::parse(&text)
            .unwrap_err()
            .to_string()
            .contains("approvals"));
    }

    #[test]
    fn bad_duration_is_refused_with_its_line() {
        let text = SAMPLE.replace("max_duration = \"1h\"", "max_duration = \"1 hour\"");
        let err = Config::parse(&text).unwrap_err().to_string();
        assert!(
            err.contains("not a duration") && err.contains("line 23"),
            "{err}"
        );
    }
}
