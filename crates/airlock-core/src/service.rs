//! The service catalog: who owns a service, where its people are reached.
//! An entitlement or operation that names a `service` gets its reviewers
//! from the owners (unless it lists its own) and its notifications routed to
//! the service's chat channel and address. Parsing only; fetching a remote
//! catalog (`catalog_url`) is the server's job.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::approval::ApprovalRule;
use crate::config::ConfigError;
use crate::ServiceName;

/// Most services one catalog may hold (bounds a remote catalog's size).
pub const MAX_SERVICES: usize = 10_000;

/// `[[service]]`: one service of the catalog.
#[derive(Deserialize, Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct Service {
    /// Service name, referenced by `service = "..."`.
    pub name: ServiceName,
    /// Groups or users who own it (default reviewers).
    #[serde(default)]
    pub owners: Vec<String>,
    /// Slack channel for its notifications (`#name` or a channel id).
    pub slack_channel: Option<String>,
    /// Address reviewers are emailed at.
    pub email: Option<String>,
}

/// All services by name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServiceCatalog {
    services: BTreeMap<ServiceName, Service>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum RemoteCatalog {
    List(Vec<Service>),
    Object { services: Vec<Service> },
}

impl ServiceCatalog {
    /// Builds a catalog, refusing duplicate names and bad entries.
    pub fn new(services: Vec<Service>) -> Result<Self, ConfigError> {
        if services.len() > MAX_SERVICES {
            return Err(ConfigError::Invalid(format!(
                "the service catalog has {} services; at most {MAX_SERVICES} are accepted",
                services.len()
            )));
        }
        let mut map = BTreeMap::new();
        for s in services {
            let ctx = format!("[[service]] `{}`", s.name);
            for o in &s.owners {
                if let Err(e) = crate::principal::check_entry(o) {
                    return Err(ConfigError::Invalid(format!(
                        "{ctx}: owner `{}` is not a valid user or group name ({e})",
                        o.chars().take(80).collect::<String>()
                    )));
                }
            }
            if let Some(c) = &s.slack_channel {
                let ok = !c.is_empty()
                    && c.len() <= 80
                    && c.bytes().all(|b| {
                        b.is_ascii_alphanumeric() || matches!(b, b'#' | b'-' | b'_' | b'.')
                    });
                if !ok {
                    return Err(ConfigError::Invalid(format!(
                        "{ctx}: slack_channel `{c}` must be `#name` or a channel id"
                    )));
                }
            }
            if let Some(e) = &s.email {
                if !crate::notify::is_email(e) {
                    return Err(ConfigError::Invalid(format!(
                        "{ctx}: email `{e}` is not an email address"
                    )));
                }
            }
            if map.insert(s.name.clone(), s).is_some() {
                return Err(ConfigError::Invalid(format!("{ctx} is defined twice")));
            }
        }
        Ok(ServiceCatalog { services: map })
    }

    /// Parses a remote catalog: a JSON array of services or `{"services": [...]}`.
    pub fn from_json(bytes: &[u8]) -> Result<Self, ConfigError> {
        let parsed: RemoteCatalog = serde_json::from_slice(bytes).map_err(|e| {
            ConfigError::Invalid(format!(
                "service catalog is not valid JSON of the expected shape: {e}"
            ))
        })?;
        match parsed {
            RemoteCatalog::List(s) | RemoteCatalog::Object { services: s } => Self::new(s),
        }
    }

    /// The service called `name`, if any.
    pub fn get(&self, name: &ServiceName) -> Option<&Service> {
        self.services.get(name)
    }

    /// All services, by name.
    pub fn iter(&self) -> impl Iterator<Item = &Service> {
        self.services.values()
    }

    /// Number of services.
    pub fn len(&self) -> usize {
        self.services.len()
    }

    /// Whether the catalog has no services.
    pub fn is_empty(&self) -> bool {
        self.services.is_empty()
    }

    /// The rule that applies: `rule` as written, or with the service's owners
    /// as reviewers when the rule names none. A service missing from the
    /// catalog leaves the reviewers empty, so nobody can approve (fail closed).
    pub fn effective_rule(
        &self,
        rule: &ApprovalRule,
        service: Option<&ServiceName>,
    ) -> ApprovalRule {
        match service {
            Some(s) if rule.reviewers.is_empty() => ApprovalRule {
                count: rule.count,
                reviewers: self.get(s).map(|s| s.owners.clone()).unwrap_or_default(),
            },
            _ => rule.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svc(name: &str, owners: &[&str]) -> Service {
        Service {
            name: ServiceName::parse(name).unwrap(),
            owners: owners.iter().map(|s| s.to_string()).collect(),
            slack_channel: Some("#payments-oncall".into()),
            email: Some("payments-oncall@example.com".into()),
        }
    }

    #[test]
    fn owners_become_reviewers_only_when_the_rule_names_none() {
        let cat = ServiceCatalog::new(vec![svc("payments", &["payments-eng"])]).unwrap();
        let name = ServiceName::parse("payments").unwrap();
        let empty = ApprovalRule {
            count: 1,
            reviewers: vec![],
        };
        assert_eq!(
            cat.effective_rule(&empty, Some(&name)).reviewers,
            vec!["payments-eng"]
        );
        let own = ApprovalRule {
            count: 1,
            reviewers: vec!["sre".into()],
        };
        assert_eq!(cat.effective_rule(&own, Some(&name)).reviewers, vec!["sre"]);
        let gone = ServiceName::parse("ledger").unwrap();
        assert!(cat.effective_rule(&empty, Some(&gone)).reviewers.is_empty());
    }

    #[test]
    fn remote_catalog_accepts_both_shapes_and_refuses_unknown_keys() {
        let list = br##"[{"name":"payments","owners":["payments-eng"],"slack_channel":"#pay"}]"##;
        assert_eq!(ServiceCatalog::from_json(list).unwrap().len(), 1);
        let obj = br#"{"services":[{"name":"payments","owners":["a"]},{"name":"ledger"}]}"#;
        assert_eq!(ServiceCatalog::from_json(obj).unwrap().len(), 2);
        let err = ServiceCatalog::from_json(br#"[{"name":"p","owner":["a"]}]"#).unwrap_err();
        assert!(err.to_string().contains("expected shape"), "{err}");
        let dup = br#"[{"name":"p"},{"name":"p"}]"#;
        assert!(ServiceCatalog::from_json(dup)
            .unwrap_err()
            .to_string()
            .contains("twice"));
    }

    #[test]
    fn bad_channel_and_email_are_refused() {
        let mut s = svc("payments", &[]);
        s.slack_channel = Some("#pay ments".into());
        assert!(ServiceCatalog::new(vec![s]).is_err());
        let mut s = svc("payments", &[]);
        s.email = Some("not-an-address".into());
        assert!(ServiceCatalog::new(vec![s]).is_err());
    }
}
