//! The configuration file (`airlock serve --config FILE`): server settings and
//! the catalog (users, groups, providers, entitlements). Parsed from text here;
//! reading files is the binary's job. Unknown keys are refused with their line,
//! except the keys of a provider section and an entitlement's provider-specific
//! keys: core does not know provider kinds, so it keeps those as [`RawKeys`]
//! (each with its line) for the providers crate, whose `ValidatedConfig` reads
//! them with the kind's own types when the file is loaded.

use std::collections::{BTreeMap, BTreeSet};

use regex::Regex;
use serde::Deserialize;

use crate::approval::ApprovalRule;
use crate::names::{EntitlementName, GroupName, ProviderName, UserName};
use crate::principal::Principal;
use crate::Span;

mod raw_keys;
pub use raw_keys::{KeyError, RawKeys};

/// A configuration error with enough context to fix the file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// TOML syntax, a wrong type or an unknown key (the message names key and line).
    #[error("{0}")]
    Toml(#[from] toml::de::Error),
    /// A table's key is unknown, missing or has a bad value (names key and line).
    #[error("{}", source.in_table(ctx))]
    Keys {
        /// The table, such as ``[[entitlement]] `db` ``.
        ctx: String,
        /// What is wrong with the key.
        source: KeyError,
    },
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
    providers: BTreeMap<String, SpannedTable>,
    #[serde(default)]
    entitlement: Vec<SpannedTable>,
    #[serde(default)]
    tool: Vec<toml::Spanned<crate::tool::RawTool>>,
    #[serde(default)]
    operation: Vec<toml::Spanned<crate::operation::RawOperation>>,
    #[serde(default)]
    auth: crate::oidc::AuthConfig,
    #[serde(default)]
    notify: crate::notify::NotifyConfig,
    #[serde(default)]
    service: Vec<crate::service::Service>,
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
    /// Origin line (and key name) of signed audit tree heads; default: `public_url`'s host + `/audit`.
    pub audit_origin: Option<String>,
    /// How often the reconciler compares providers with the store for drift.
    #[serde(default = "default_drift_interval")]
    pub drift_interval: Span,
    /// Load `[[service]]` entries from this HTTP JSON endpoint instead of the file.
    pub catalog_url: Option<String>,
    /// How often `catalog_url` is fetched again (the last good copy is kept when it fails).
    #[serde(default = "default_catalog_refresh")]
    pub catalog_refresh: Span,
    /// Users and groups (`user:`/`group:` or bare) who may read the whole audit log, requests and runs.
    #[serde(default)]
    pub auditors: Vec<String>,
    /// Tool-proxy runs one replica executes at once; more are refused with 429.
    #[serde(default = "default_max_concurrent_runs")]
    pub max_concurrent_runs: u32,
    /// If set, `/metrics` needs `Authorization: Bearer <metrics_token>`.
    pub metrics_token: Option<String>,
    /// If set, `/metrics` is served only on this `host:port` (the main listener answers 404).
    pub metrics_listen: Option<String>,
    /// On SIGTERM: how long in-flight requests, streams and reconciler passes
    /// may take to finish before the process exits anyway.
    #[serde(default = "default_shutdown_grace")]
    pub shutdown_grace: Span,
    /// How far ahead a request may ask its grant to start (`--start`).
    #[serde(default = "default_max_schedule_ahead")]
    pub max_schedule_ahead: Span,
}

impl ServerConfig {
    /// The audit log's origin: `audit_origin`, else `public_url`'s host + `/audit`,
    /// else `localhost/audit`.
    pub fn audit_origin(&self) -> String {
        if let Some(o) = &self.audit_origin {
            return o.clone();
        }
        let host = self.public_url.as_deref().and_then(|u| {
            let rest = u.split_once("://").map_or(u, |(_, r)| r);
            let authority = rest.split(['/', '?', '#']).next()?;
            let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
            // Drop a port, but keep a bracketed IPv6 address whole.
            let host = match host.rsplit_once(':') {
                Some((h, p)) if !h.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => h,
                _ => host,
            };
            (!host.is_empty()).then(|| host.to_ascii_lowercase())
        });
        format!("{}/audit", host.unwrap_or_else(|| "localhost".into()))
    }
}

fn default_listen() -> String {
    "127.0.0.1:8080".into()
}
fn default_max_concurrent_runs() -> u32 {
    16
}
fn default_checkpoint_every() -> u64 {
    1000
}
fn default_drift_interval() -> Span {
    Span::from_secs(60).expect("60 is a valid span")
}
fn default_catalog_refresh() -> Span {
    Span::from_secs(300).expect("300 is a valid span")
}
fn default_shutdown_grace() -> Span {
    Span::from_secs(20).expect("20 is a valid span")
}
fn default_max_schedule_ahead() -> Span {
    Span::from_secs(7 * 86_400).expect("7d is a valid span")
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
            audit_origin: None,
            drift_interval: default_drift_interval(),
            catalog_url: None,
            catalog_refresh: default_catalog_refresh(),
            auditors: Vec::new(),
            max_concurrent_runs: default_max_concurrent_runs(),
            metrics_token: None,
            metrics_listen: None,
            shutdown_grace: default_shutdown_grace(),
            max_schedule_ahead: default_max_schedule_ahead(),
        }
    }
}

/// `[[user]]`: a static user.
#[derive(Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub struct UserEntry {
    pub name: UserName,
    pub email: Option<String>,
    /// Slack member id (`U…`) for chat approvals when emails do not match.
    pub slack_id: Option<String>,
    /// Pins the OIDC subject (`sub` claim) this name belongs to; a login under
    /// this name with another subject is refused.
    pub oidc_subject: Option<String>,
}

/// `[[group]]`: a named set of users.
#[derive(Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub struct GroupEntry {
    pub name: GroupName,
    #[serde(default)]
    pub members: Vec<UserName>,
}

/// A table as read from the file, each value with its place (for lines).
type SpannedTable = BTreeMap<String, toml::Spanned<toml::Value>>;

/// `[providers.NAME]`: one provider instance. Core reads only `kind`; the
/// other keys belong to that kind (the providers crate reads and checks them).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ProviderSection {
    /// Which adapter (`postgres`, `ssh`, ...).
    pub kind: String,
    /// The section's other keys, with their lines.
    pub keys: RawKeys,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawReason {
    #[serde(default)]
    required: bool,
    pattern: Option<String>,
}

/// The `[[entitlement]]` keys every provider kind shares; any other key is the
/// kind's (see [`Entitlement::target`]).
const ENTITLEMENT_KEYS: &[&str] = &[
    "name",
    "description",
    "provider",
    "max_duration",
    "approvals",
    "reason",
    "breakglass",
    "approval_timeout",
    "requesters",
    "service",
    "mfa",
    "access",
    "target",
];

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEntitlement {
    name: EntitlementName,
    #[serde(default)]
    description: String,
    provider: ProviderName,
    max_duration: Span,
    approvals: Option<crate::tool::RawApprovals>,
    reason: Option<RawReason>,
    #[serde(default)]
    breakglass: bool,
    approval_timeout: Option<Span>,
    requesters: Option<Vec<String>>,
    service: Option<crate::ServiceName>,
    #[serde(default)]
    mfa: bool,
    #[serde(default)]
    access: Access,
    target: Option<String>,
}

/// How a grant is used: the provider's credentials handed to the person, or
/// only through the gateway (which holds the credential itself), or both.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Access {
    /// `airlock credentials` hands out the provider's secret (the default).
    #[default]
    Credentials,
    /// Only `airlock connect`: the secret never leaves the server.
    Gateway,
    /// Both ways.
    Both,
}

impl Access {
    /// Whether `airlock credentials` may hand out the secret.
    pub fn allows_credentials(self) -> bool {
        self != Access::Gateway
    }

    /// Whether `airlock connect` may open a gateway session.
    pub fn allows_gateway(self) -> bool {
        self != Access::Credentials
    }

    /// The configuration and wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Access::Credentials => "credentials",
            Access::Gateway => "gateway",
            Access::Both => "both",
        }
    }
}

/// Checks a gateway `target = "host:port"`.
fn check_gateway_target(ctx: &str, t: &str) -> Result<(), ConfigError> {
    let bad = || {
        invalid(format!(
            "{ctx}: target `{}` must be `host:port` (e.g. `db.internal:5432`)",
            t.chars().take(80).collect::<String>()
        ))
    };
    let (host, port) = t.rsplit_once(':').ok_or_else(bad)?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if host.is_empty()
        || host.len() > 253
        || !host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-.:_".contains(&b))
        || port.parse::<u16>().map_or(true, |p| p == 0)
    {
        return Err(bad());
    }
    Ok(())
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
    /// What exactly the provider grants (role, SSH principals, ClusterRole, ...):
    /// the keys of the provider's kind, read and checked by that kind.
    pub target: RawKeys,
    pub max_duration: Span,
    pub approvals: ApprovalRule,
    pub reason: ReasonRule,
    pub breakglass: bool,
    /// Pending requests lapse after this.
    pub approval_timeout: Span,
    /// Users or groups who may ask; empty = anyone authenticated.
    pub requesters: Vec<String>,
    /// Service that owns it: default reviewers and where notifications go.
    pub service: Option<crate::ServiceName>,
    /// Requesters must have logged in with multi-factor authentication.
    pub mfa: bool,
    /// `access`: credentials, gateway or both.
    pub access: Access,
    /// `target = "host:port"`: where a gateway session relays bytes (kinds
    /// whose gateway speaks the protocol, such as postgres, know their target).
    pub gateway_target: Option<String>,
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub server: ServerConfig,
    pub users: BTreeMap<UserName, UserEntry>,
    pub groups: BTreeMap<GroupName, BTreeSet<UserName>>,
    pub providers: BTreeMap<ProviderName, ProviderSection>,
    pub entitlements: BTreeMap<EntitlementName, Entitlement>,
    /// `[[tool]]`s the proxy may run.
    pub tools: BTreeMap<crate::ToolName, crate::tool::Tool>,
    /// `[[operation]]`s in the catalog.
    pub operations: BTreeMap<crate::OperationName, crate::operation::Operation>,
    /// `[auth]`: OIDC login.
    pub auth: crate::oidc::AuthConfig,
    /// `[notify]`: Slack, webhooks, email.
    pub notify: crate::notify::NotifyConfig,
    /// `[[service]]` from the file (replaced at run time when `catalog_url` is set).
    pub services: crate::service::ServiceCatalog,
    /// Every group name the catalog uses, with where it is used: no login
    /// name may equal one (else a user could borrow the group's rights).
    pub reserved_groups: BTreeMap<String, String>,
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
        for (name, table) in raw.providers {
            let pname = ProviderName::parse(&name)
                .map_err(|e| invalid(format!("[providers.{name}]: {e}")))?;
            let mut keys = RawKeys::from_spanned(text, table);
            let kind = keys.split_off(&["kind"]);
            let kind = match kind.get("kind") {
                Some(toml::Value::String(k)) => k.clone(),
                Some(_) => {
                    return Err(invalid(format!(
                        "[providers.{name}], line {}: `kind` must be a string such as \"postgres\"",
                        kind.line("kind")
                    )))
                }
                None => {
                    return Err(invalid(format!(
                        "[providers.{name}]: `kind` is required (such as kind = \"postgres\")"
                    )))
                }
            };
            providers.insert(pname, ProviderSection { kind, keys });
        }
        let mut entitlements = BTreeMap::new();
        for (i, table) in raw.entitlement.into_iter().enumerate() {
            let mut target = RawKeys::from_spanned(text, table);
            let shared = target.split_off(ENTITLEMENT_KEYS);
            let ctx = match shared.get("name") {
                Some(toml::Value::String(n)) => format!("[[entitlement]] `{n}`"),
                _ => format!("[[entitlement]] number {}", i + 1),
            };
            let e: RawEntitlement = shared.parse().map_err(|source| ConfigError::Keys {
                ctx: ctx.clone(),
                source,
            })?;
            if !providers.contains_key(&e.provider) {
                return Err(invalid(format!(
                    "{ctx}: provider `{}` is not defined under [providers]",
                    e.provider
                )));
            }
            let approvals = match (e.approvals, e.breakglass) {
                (Some(a), _) => crate::tool::approvals_from(&ctx, a, e.service.is_some())?,
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
            if let Some(t) = &e.target {
                check_gateway_target(&ctx, t)?;
                if !e.access.allows_gateway() {
                    return Err(invalid(format!(
                        "{ctx}: `target` is only used by the gateway: set `access = \"gateway\"` (or \"both\"), or remove it"
                    )));
                }
            }
            for r in e.requesters.iter().flatten() {
                crate::principal::check_entry(r)
                    .map_err(|err| invalid(format!("{ctx}: requesters entry `{r}`: {err}")))?;
            }
            let ent = Entitlement {
                name: e.name.clone(),
                description: e.description,
                provider: e.provider,
                target,
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
                service: e.service,
                mfa: e.mfa,
                access: e.access,
                gateway_target: e.target,
            };
            if entitlements.insert(e.name.clone(), ent).is_some() {
                return Err(invalid(format!("{ctx} is defined twice")));
            }
        }
        let tools = crate::tool::parse_tools(text, raw.tool)?;
        let operations = crate::operation::parse_operations(text, raw.operation, &tools)?;
        let services = crate::service::ServiceCatalog::new(raw.service)?;
        check_services(&raw.server, &services, &entitlements, &operations)?;
        check_breakglass(&raw.server, &services, &entitlements)?;
        check_metrics(&raw.server)?;
        if raw.server.shutdown_grace.as_secs() > 600 {
            return Err(invalid(
                "[server] shutdown_grace may be at most 10m: a replica that takes longer to stop \
                 holds up rollouts (work it cannot finish is picked up by another replica)",
            ));
        }
        raw.notify.validate()?;
        if let Some(o) = &raw.auth.oidc {
            o.validate()?;
        }
        if !(1..=4096).contains(&raw.server.max_concurrent_runs) {
            return Err(invalid(format!(
                "[server] max_concurrent_runs = {} must be between 1 and 4096",
                raw.server.max_concurrent_runs
            )));
        }
        for a in &raw.server.auditors {
            crate::principal::check_entry(a)
                .map_err(|e| invalid(format!("[server] auditors entry `{a}`: {e}")))?;
        }
        for u in users.values() {
            if let Some(sub) = &u.oidc_subject {
                if sub.is_empty() || sub.len() > 255 || sub.chars().any(char::is_control) {
                    return Err(invalid(format!(
                        "[[user]] `{}`: oidc_subject must be the identity provider's `sub` claim (1-255 characters)",
                        u.name
                    )));
                }
            }
            if let Some(id) = &u.slack_id {
                if id.is_empty() || id.len() > 32 || !id.bytes().all(|b| b.is_ascii_alphanumeric())
                {
                    return Err(invalid(format!(
                        "[[user]] `{}`: slack_id `{id}` must be a Slack member id such as U024BE7LH",
                        u.name
                    )));
                }
            }
            if let Some(e) = &u.email {
                if !crate::notify::is_email(e) {
                    return Err(invalid(format!(
                        "[[user]] `{}`: email `{e}` is not an email address",
                        u.name
                    )));
                }
            }
        }
        let mut config = Config {
            server: raw.server,
            users,
            groups,
            providers,
            entitlements,
            tools,
            operations,
            auth: raw.auth,
            notify: raw.notify,
            services,
            reserved_groups: BTreeMap::new(),
        };
        config.reserved_groups = config.collect_reserved_groups();
        for u in config.users.values() {
            if let Some(place) = config.reserved_groups.get(u.name.as_str()) {
                return Err(invalid(format!(
                    "[[user]] `{}` has the name of a group ({place}): rename the user or the group, or write `user:{}` where the user is meant",
                    u.name, u.name
                )));
            }
        }
        Ok(config)
    }

    /// Collects the group names the catalog uses. A bare entry counts as a group
    /// unless a `[[user]]` has that name: an unknown bare name is as likely an
    /// identity provider's group, and refusing it as a login name fails closed.
    fn collect_reserved_groups(&self) -> BTreeMap<String, String> {
        let users = &self.users;
        let mut out = BTreeMap::new();
        let mut add = |entry: &str, place: &dyn Fn() -> String| {
            use crate::principal::Designee;
            let group = match Designee::of(entry) {
                Designee::Group(n) => n,
                Designee::Either(n)
                    if UserName::parse(n).map_or(true, |u| !users.contains_key(&u)) =>
                {
                    n
                }
                _ => return,
            };
            out.entry(group.to_ascii_lowercase()).or_insert_with(place);
        };
        for g in self.groups.keys() {
            add(&format!("group:{g}"), &|| "a [[group]]".to_string());
        }
        for e in self.entitlements.values() {
            for r in &e.approvals.reviewers {
                add(r, &|| format!("a reviewer of entitlement `{}`", e.name));
            }
            for r in &e.requesters {
                add(r, &|| format!("a requester of entitlement `{}`", e.name));
            }
        }
        for t in self.tools.values() {
            for rule in &t.rules {
                for r in &rule.approvals.reviewers {
                    add(r, &|| format!("a reviewer of tool `{}`", t.name));
                }
            }
        }
        for o in self.operations.values() {
            for r in &o.approvals.reviewers {
                add(r, &|| format!("a reviewer of operation `{}`", o.name));
            }
        }
        for s in self.services.iter() {
            for r in &s.owners {
                add(r, &|| format!("an owner of service `{}`", s.name));
            }
        }
        for a in &self.server.auditors {
            add(a, &|| "[server] auditors".to_string());
        }
        for g in self.auth.oidc.iter().flat_map(|o| &o.admin_groups) {
            add(&format!("group:{g}"), &|| {
                "[auth.oidc] admin_groups".to_string()
            });
        }
        out
    }

    /// Refuses a login name (OIDC or `token create`) that is a group name of
    /// the catalog, naming where the group is used.
    pub fn check_login_name(&self, name: &UserName) -> Result<(), crate::Error> {
        match self.reserved_groups.get(name.as_str()) {
            None => Ok(()),
            Some(place) => Err(crate::Error::forbidden(format!(
                "`{name}` is the name of a group ({place}), so it cannot be a user's login name; \
                 use another name, or have an admin write `user:{name}` in the catalog and declare [[user]] `{name}`"
            ))),
        }
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

    /// Builds the principal for `name`: catalog groups, `extra_groups`, the
    /// catalog email, and admin if `admin` or a group is in `[auth.oidc] admin_groups`.
    pub fn principal(&self, name: UserName, extra_groups: &[GroupName], admin: bool) -> Principal {
        let mut groups: BTreeSet<GroupName> = self
            .groups
            .iter()
            .filter(|(_, members)| members.contains(&name))
            .map(|(g, _)| g.clone())
            .collect();
        groups.extend(extra_groups.iter().cloned());
        // Evaluated on every call from the configuration in force, never
        // snapshotted into a token: removing a group from admin_groups takes effect at once.
        let admin = admin
            || self.auth.oidc.as_ref().is_some_and(|o| {
                groups
                    .iter()
                    .any(|g| o.admin_groups.iter().any(|a| a == g.as_str()))
            });
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

/// Every `service = "..."` must name a `[[service]]`, unless services come from `catalog_url`.
fn check_services(
    server: &ServerConfig,
    services: &crate::service::ServiceCatalog,
    entitlements: &BTreeMap<EntitlementName, Entitlement>,
    operations: &BTreeMap<crate::OperationName, crate::operation::Operation>,
) -> Result<(), ConfigError> {
    if let Some(url) = &server.catalog_url {
        // Owners from the catalog decide who reviews: never fetch them over a
        // network that could rewrite them, except from this machine.
        if !(url.starts_with("https://") || is_loopback_http(url)) {
            return Err(invalid(format!(
                "[server] catalog_url `{url}` must be an https:// URL \
                 (http:// only for 127.0.0.1, localhost or [::1])"
            )));
        }
        if !services.is_empty() {
            return Err(invalid(
                "[server] catalog_url is set, so [[service]] tables in the file would be ignored: keep one or the other",
            ));
        }
        return Ok(());
    }
    let named = entitlements
        .values()
        .filter_map(|e| {
            e.service
                .as_ref()
                .map(|s| (format!("[[entitlement]] `{}`", e.name), s))
        })
        .chain(operations.values().filter_map(|o| {
            o.service
                .as_ref()
                .map(|s| (format!("[[operation]] `{}`", o.name), s))
        }));
    for (ctx, s) in named {
        if services.get(s).is_none() {
            return Err(invalid(format!(
                "{ctx}: service `{s}` is not defined (add a [[service]] table or set [server] catalog_url)"
            )));
        }
    }
    Ok(())
}

/// `metrics_token` must be a usable bearer token, `metrics_listen` a separate address.
fn check_metrics(server: &ServerConfig) -> Result<(), ConfigError> {
    if let Some(t) = &server.metrics_token {
        if t.len() < 16 || t.len() > 512 || !t.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(invalid(
                "[server] metrics_token must be 16-512 printable characters without spaces \
                 (generate one with `openssl rand -hex 32`)",
            ));
        }
    }
    if let Some(l) = &server.metrics_listen {
        let ok = l
            .rsplit_once(':')
            .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
        if !ok {
            return Err(invalid(format!(
                "[server] metrics_listen `{l}` must be host:port, such as 127.0.0.1:9090"
            )));
        }
        if *l == server.listen {
            return Err(invalid(format!(
                "[server] metrics_listen `{l}` is the main listen address: pick another port, or omit it"
            )));
        }
    }
    Ok(())
}

/// A break-glass entitlement skips approval, so the catalog must say who may
/// self-activate it and who closes its post-incident review; otherwise any
/// authenticated user could do either, and both fail closed here instead.
fn check_breakglass(
    server: &ServerConfig,
    services: &crate::service::ServiceCatalog,
    entitlements: &BTreeMap<EntitlementName, Entitlement>,
) -> Result<(), ConfigError> {
    for e in entitlements.values().filter(|e| e.breakglass) {
        let ctx = format!("[[entitlement]] `{}`", e.name);
        if e.requesters.is_empty() {
            return Err(invalid(format!(
                "{ctx}: a break-glass entitlement needs `requesters = [\"group-or-user\", ...]` \
                 (who may self-activate it); without it any authenticated user could"
            )));
        }
        if !e.approvals.reviewers.is_empty() {
            continue;
        }
        let owned = match &e.service {
            // Owners of a remote catalog are only known at run time; until
            // they are, nobody but an admin can close the review (fail closed).
            Some(_) if server.catalog_url.is_some() => true,
            Some(s) => services.get(s).is_some_and(|svc| !svc.owners.is_empty()),
            None => false,
        };
        if !owned {
            return Err(invalid(format!(
                "{ctx}: a break-glass entitlement needs post-incident reviewers: add \
                 `approvals = {{ count = 0, reviewers = [\"group-or-user\", ...] }}` or a `service` \
                 whose [[service]] lists owners; without them anyone could close the review"
            )));
        }
    }
    Ok(())
}

/// `http://` to a loopback host (127.0.0.1, localhost, [::1]), with an optional port.
fn is_loopback_http(url: &str) -> bool {
    let Some(rest) = url.strip_prefix("http://") else {
        return false;
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if authority.contains('@') {
        return false;
    }
    let host = match authority.strip_prefix("[::1]") {
        Some(port) => return port.is_empty() || is_port(port),
        None => authority,
    };
    let (name, port) = host.split_once(':').unwrap_or((host, ""));
    (name == "127.0.0.1" || name.eq_ignore_ascii_case("localhost"))
        && (port.is_empty() || is_port(&format!(":{port}")))
}

fn is_port(p: &str) -> bool {
    p.strip_prefix(':')
        .is_some_and(|n| n.parse::<u16>().is_ok())
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
    fn keys_core_does_not_know_are_kept_for_the_provider_with_their_line() {
        let text = SAMPLE.replace(
            "max_duration = \"1h\"",
            "max_duration = \"1h\"\nmax_durration = \"2h\"",
        );
        let c = Config::parse(&text).unwrap();
        let e = c.entitlement("payments-db-write").unwrap();
        assert_eq!(
            e.target.keys().collect::<Vec<_>>(),
            ["role", "max_durration"]
        );
        assert_eq!(e.target.line("max_durration"), 24);
        assert_eq!(c.providers.values().next().unwrap().kind, "postgres");
        assert!(c
            .providers
            .values()
            .next()
            .unwrap()
            .keys
            .get("url")
            .is_some());
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

#[cfg(test)]
mod identity_tests {
    use super::*;

    const BASE: &str = r#"
[[user]]
name = "alice"

[[group]]
name = "payments-eng"
members = ["alice", "bob"]

[providers.pg]
kind = "postgres"
url = "postgres://postgres@127.0.0.1/postgres"

[[entitlement]]
name = "db"
provider = "pg"
role = "r"
max_duration = "1h"
approvals = { count = 1, reviewers = ["sre", "user:carol", "alice", "group:oncall"] }
requesters = ["group:engineers"]

[auth.oidc]
issuer = "https://idp.example.com"
client_id = "airlock"
admin_groups = ["airlock-admins"]
"#;

    fn user(n: &str) -> UserName {
        UserName::parse(n).unwrap()
    }

    #[test]
    fn group_names_of_the_catalog_cannot_be_login_names() {
        let c = Config::parse(BASE).unwrap();
        for (name, place) in [
            ("payments-eng", "a [[group]]"),
            ("sre", "a reviewer of entitlement `db`"),
            ("oncall", "a reviewer of entitlement `db`"),
            ("engineers", "a requester of entitlement `db`"),
            ("airlock-admins", "admin_groups"),
        ] {
            let err = c.check_login_name(&user(name)).unwrap_err().to_string();
            assert!(
                err.contains("is the name of a group") && err.contains(place),
                "{name}: {err}"
            );
        }
        // Users named explicitly or declared as [[user]] keep their names.
        for ok in ["carol", "alice", "bob", "dave"] {
            assert!(c.check_login_name(&user(ok)).is_ok(), "{ok}");
        }
    }

    #[test]
    fn a_declared_user_may_not_share_a_name_with_a_group() {
        for group in ["payments-eng", "oncall"] {
            let text = format!("{BASE}\n[[user]]\nname = \"{group}\"\n");
            let err = Config::parse(&text).unwrap_err().to_string();
            assert!(
                err.contains(&format!("[[user]] `{group}` has the name of a group")),
                "{err}"
            );
        }
        // Declaring a user settles what a bare entry means: `sre` is then that user.
        let text = format!("{BASE}\n[[user]]\nname = \"sre\"\n");
        assert!(Config::parse(&text)
            .unwrap()
            .check_login_name(&user("sre"))
            .is_ok());
    }

    #[test]
    fn malformed_entries_and_subjects_are_refused_at_load() {
        for (from, to, why) in [
            (
                "\"user:carol\"",
                "\"user:Bad Name\"",
                "approvals.reviewers entry `user:Bad Name`",
            ),
            (
                "\"group:engineers\"",
                "\"group:\"",
                "requesters entry `group:`",
            ),
        ] {
            let err = Config::parse(&BASE.replace(from, to))
                .unwrap_err()
                .to_string();
            assert!(err.contains(why), "{err}");
        }
        let pinned = BASE.replace(
            "name = \"alice\"\n",
            "name = \"alice\"\noidc_subject = \"\"\n",
        );
        let err = Config::parse(&pinned).unwrap_err().to_string();
        assert!(err.contains("oidc_subject"), "{err}");
    }

    #[test]
    fn admin_groups_are_evaluated_from_the_config_in_force() {
        let c = Config::parse(BASE).unwrap();
        let g = |n: &str| GroupName::parse(n).unwrap();
        assert!(
            c.principal(user("erin"), &[g("airlock-admins")], false)
                .admin
        );
        assert!(!c.principal(user("erin"), &[g("engineers")], false).admin);
        let without =
            Config::parse(&BASE.replace("admin_groups = [\"airlock-admins\"]", "")).unwrap();
        assert!(
            !without
                .principal(user("erin"), &[g("airlock-admins")], false)
                .admin
        );
    }
}

#[cfg(test)]
mod catalog_url_tests {
    use super::*;

    fn with_url(url: &str) -> Result<Config, ConfigError> {
        Config::parse(&format!("[server]\ncatalog_url = \"{url}\"\n"))
    }

    #[test]
    fn catalog_url_is_https_or_loopback_http() {
        for ok in [
            "https://portal.example.com/services.json",
            "http://127.0.0.1:8081/services.json",
            "http://localhost/services.json",
            "http://[::1]:9000/s",
        ] {
            with_url(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        for bad in [
            "http://portal.example.com/services.json",
            "http://127.0.0.1.evil.example/s",
            "http://localhost@evil.example/s",
            "http://127.0.0.1:99999/s",
            "ftp://127.0.0.1/s",
        ] {
            let e = with_url(bad).unwrap_err().to_string();
            assert!(e.contains("must be an https:// URL"), "{bad}: {e}");
        }
    }
}

#[cfg(test)]
mod metrics_tests {
    use super::*;

    fn server(extra: &str) -> Result<Config, ConfigError> {
        Config::parse(&format!("[server]\n{extra}\n"))
    }

    #[test]
    fn shutdown_grace_defaults_to_20s_and_is_bounded() {
        assert_eq!(server("").unwrap().server.shutdown_grace.as_secs(), 20);
        let c = server("shutdown_grace = \"5s\"").unwrap();
        assert_eq!(c.server.shutdown_grace.as_secs(), 5);
        let e = server("shutdown_grace = \"11m\"").unwrap_err().to_string();
        assert!(e.contains("shutdown_grace may be at most 10m"), "{e}");
        assert!(server("shutdown_grace = \"0s\"").is_err());
    }

    #[test]
    fn metrics_token_and_listen_are_checked() {
        let c =
            server("metrics_token = \"0123456789abcdef0123\"\nmetrics_listen = \"127.0.0.1:9090\"")
                .unwrap();
        assert_eq!(c.server.metrics_listen.as_deref(), Some("127.0.0.1:9090"));
        let e = server("metrics_token = \"short\"").unwrap_err().to_string();
        assert!(e.contains("metrics_token") && e.contains("openssl"), "{e}");
        let e = server("metrics_listen = \"9090\"").unwrap_err().to_string();
        assert!(e.contains("host:port"), "{e}");
        let e = server("listen = \"127.0.0.1:8080\"\nmetrics_listen = \"127.0.0.1:8080\"")
            .unwrap_err()
            .to_string();
        assert!(e.contains("main listen address"), "{e}");
    }

    #[test]
    fn webhooks_are_named_by_position_unless_named_and_names_are_unique() {
        let hook = |name: &str, url: &str| {
            format!("[[notify.webhook]]\n{name}url = \"{url}\"\nsecret = \"s\"\n")
        };
        let c = Config::parse(&format!(
            "{}{}",
            hook("", "https://hooks.slack.com/services/T0/B0/SECRET"),
            hook("name = \"siem\"\n", "https://siem.example/a")
        ))
        .unwrap();
        let names: Vec<String> = c
            .notify
            .webhook
            .iter()
            .enumerate()
            .map(|(i, w)| w.name_at(i))
            .collect();
        assert_eq!(names, ["webhook-1", "siem"]);
        let e = Config::parse(&format!(
            "{}{}",
            hook("name = \"x\"\n", "https://a.example/"),
            hook("name = \"x\"\n", "https://b.example/")
        ))
        .unwrap_err()
        .to_string();
        assert!(e.contains("used twice"), "{e}");
        let e = Config::parse(&hook("name = \"a b\"\n", "https://a.example/"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("name must be"), "{e}");
    }
}

#[cfg(test)]
mod breakglass_tests {
    use super::*;

    const BASE: &str = r#"
[[group]]
name = "sre"
members = ["alice", "bob"]

[providers.pg-main]
kind = "postgres"
url = "postgres://postgres@127.0.0.1:5432/postgres"
"#;

    fn breakglass(body: &str) -> Result<Config, ConfigError> {
        Config::parse(&format!(
            "{BASE}\n[[entitlement]]\nname = \"db-breakglass\"\nprovider = \"pg-main\"\nrole = \"w\"\nmax_duration = \"30m\"\nbreakglass = true\n{body}\n"
        ))
    }

    #[test]
    fn breakglass_without_requesters_is_refused_naming_the_entitlement() {
        let err = breakglass("approvals = { count = 0, reviewers = [\"sre\"] }")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("`db-breakglass`") && err.contains("requesters = ["),
            "{err}"
        );
        let err = breakglass("requesters = []\napprovals = { count = 0, reviewers = [\"sre\"] }")
            .unwrap_err()
            .to_string();
        assert!(err.contains("requesters"), "{err}");
    }

    #[test]
    fn breakglass_without_post_incident_reviewers_is_refused() {
        for body in [
            "requesters = [\"sre\"]",
            "requesters = [\"sre\"]\napprovals = { count = 0 }",
        ] {
            let err = breakglass(body).unwrap_err().to_string();
            assert!(
                err.contains("`db-breakglass`")
                    && err.contains("reviewers")
                    && err.contains("service"),
                "{err}"
            );
        }
        // A service without owners reviews nothing either.
        let err = breakglass(
            "requesters = [\"sre\"]\nservice = \"pay\"\n[[service]]\nname = \"pay\"\nowners = []",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("post-incident reviewers"), "{err}");
    }

    #[test]
    fn breakglass_with_requesters_and_reviewers_or_owners_parses() {
        let c =
            breakglass("requesters = [\"sre\"]\napprovals = { count = 0, reviewers = [\"sre\"] }")
                .unwrap();
        let e = c.entitlement("db-breakglass").unwrap();
        assert_eq!(e.requesters, ["sre"]);
        breakglass("requesters = [\"sre\"]\nservice = \"pay\"\n[[service]]\nname = \"pay\"\nowners = [\"sre\"]")
            .unwrap();
    }
}

#[cfg(test)]
mod readme_tests {
    use super::*;

    /// The configuration reference in README.md is a working file (STYLE §6).
    #[test]
    fn readme_configuration_reference_parses() {
        let readme = include_str!("../../../README.md");
        let section = readme
            .split("## Configuration reference")
            .nth(1)
            .expect("README has a configuration reference");
        let block = section
            .split("```toml\n")
            .nth(1)
            .and_then(|b| b.split("\n```").next())
            .expect("the reference has a toml block");
        let config = Config::parse(block).unwrap_or_else(|e| panic!("README config: {e}"));
        assert!(config.auth.oidc.is_some());
        assert!(config.notify.slack.is_some() && config.notify.email.is_some());
        assert_eq!(config.notify.webhook.len(), 1);
        assert_eq!(config.notify.webhook[0].name_at(0), "siem");
        assert!(config.server.metrics_token.is_some());
        assert_eq!(
            config.server.metrics_listen.as_deref(),
            Some("127.0.0.1:9090")
        );
        let ent = config.entitlement("payments-db-write").unwrap();
        assert_eq!(ent.service.as_ref().map(|s| s.as_str()), Some("payments"));
        assert!(ent.mfa);
    }
}
