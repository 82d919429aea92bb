//! The configuration with every provider section and entitlement target read
//! by its kind, so a bad provider key fails when the file is loaded, not at
//! first use.

use std::collections::BTreeMap;
use std::sync::Arc;

use airlock_core::config::Config;
use airlock_core::{EntitlementName, ProviderName};

use crate::{
    BuildError, CatalogTarget, ConfigError, EntitlementTarget, Provider, ProviderConfig,
    ProviderContext,
};

/// The core [`Config`] plus each provider's typed configuration and each
/// entitlement's typed target.
#[derive(Debug, Clone)]
pub struct ValidatedConfig {
    config: Config,
    provider_configs: BTreeMap<ProviderName, ProviderConfig>,
    targets: BTreeMap<EntitlementName, EntitlementTarget>,
}

/// Reads as the core configuration: everything but provider keys lives there,
/// and callers mostly want that part.
impl std::ops::Deref for ValidatedConfig {
    type Target = Config;

    fn deref(&self) -> &Config {
        &self.config
    }
}

impl ValidatedConfig {
    /// Parses configuration text and checks every provider key.
    pub fn parse(text: &str) -> Result<ValidatedConfig, ConfigError> {
        ValidatedConfig::validate(Config::parse(text)?)
    }

    /// Checks every provider section and entitlement target of a parsed configuration.
    pub fn validate(config: Config) -> Result<ValidatedConfig, ConfigError> {
        let mut provider_configs = BTreeMap::new();
        for (name, section) in &config.providers {
            let typed = ProviderConfig::read(name, &section.kind, &section.keys)?;
            provider_configs.insert(name.clone(), typed);
        }
        let mut targets = BTreeMap::new();
        for (name, e) in &config.entitlements {
            // Core checked that the provider is defined.
            let Some(provider) = provider_configs.get(&e.provider) else {
                continue;
            };
            let target = provider.read_target(name, &e.provider, &e.target)?;
            if let (ProviderConfig::Ssh(c), EntitlementTarget::Ssh(t)) = (provider, &target) {
                let relayed = e.gateway_target.is_some();
                crate::ssh::config::gateway_check(c, t, e.access.allows_gateway() && !relayed)
                    .map_err(|detail| {
                        ConfigError::Core(airlock_core::config::ConfigError::Invalid(format!(
                            "[[entitlement]] `{name}`: {detail}"
                        )))
                    })?;
            } else if e.access.allows_gateway()
                && e.gateway_target.is_none()
                && !crate::gateway::speaks(provider.kind())
            {
                return Err(ConfigError::Core(airlock_core::config::ConfigError::Invalid(format!(
                    "[[entitlement]] `{name}`: access = \"{}\" needs `target = \"host:port\"`: the gateway speaks the protocol of {} only, not of kind {}",
                    e.access.as_str(),
                    crate::gateway::SPEAKS.join(", "),
                    provider.kind()
                ))));
            }
            targets.insert(name.clone(), target);
        }
        Ok(ValidatedConfig {
            config,
            provider_configs,
            targets,
        })
    }

    /// The core configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Each provider's typed configuration.
    pub fn provider_configs(&self) -> &BTreeMap<ProviderName, ProviderConfig> {
        &self.provider_configs
    }

    /// What an entitlement grants, typed by its provider's kind.
    pub fn target(&self, entitlement: &EntitlementName) -> Option<&EntitlementTarget> {
        self.targets.get(entitlement)
    }

    /// The entitlements of `provider` with their targets.
    pub fn targets_of(&self, provider: &ProviderName) -> Vec<CatalogTarget> {
        self.config
            .entitlements
            .values()
            .filter(|e| &e.provider == provider)
            .filter_map(|e| {
                Some(CatalogTarget {
                    entitlement: e.name.clone(),
                    provider: e.provider.clone(),
                    target: self.targets.get(&e.name)?.clone(),
                })
            })
            .collect()
    }

    /// Builds every provider.
    pub fn build_providers(
        &self,
        ctx: &ProviderContext,
    ) -> Result<BTreeMap<ProviderName, Arc<dyn Provider>>, BuildError> {
        self.provider_configs
            .iter()
            .map(|(name, c)| Ok((name.clone(), c.build(name, ctx)?)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<ValidatedConfig, ConfigError> {
        ValidatedConfig::parse(text)
    }

    /// The configuration reference in README.md is a working file (STYLE §6),
    /// provider keys included.
    #[test]
    fn readme_configuration_reference_validates() {
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
        let config = parse(block).unwrap_or_else(|e| panic!("README config: {e}"));
        assert!(!config.provider_configs().is_empty());
    }

    #[test]
    fn the_dev_config_validates() {
        parse(include_str!("../../airlock/src/dev-config.toml")).unwrap();
    }

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

    struct Config;
    impl Config {
        fn parse(text: &str) -> Result<ValidatedConfig, ConfigError> {
            parse(text)
        }
    }

    fn target<'a, T: crate::KindTarget>(c: &'a ValidatedConfig, name: &str) -> &'a T {
        let name = EntitlementName::parse(name).unwrap();
        T::of(c.target(&name).unwrap()).unwrap()
    }

    #[test]
    fn an_ssh_gateway_entitlement_needs_target_host_and_known_hosts() {
        let base = r#"
[providers.ssh-gw]
kind = "ssh"
ca_key = "ssh_ca"
KNOWN

[[entitlement]]
name = "web-shell"
provider = "ssh-gw"
principals = ["deploy"]
TARGET
ACCESS
max_duration = "1h"
approvals = { count = 1, reviewers = ["sre"] }
"#;
        let config = |known: &str, target: &str, access: &str| {
            parse(
                &base
                    .replace("KNOWN", known)
                    .replace("TARGET", target)
                    .replace("ACCESS", access),
            )
        };
        let known = "known_hosts = \"known_hosts\"";
        let host = "target_host = \"db1.internal:22\"";
        let gateway = "access = \"gateway\"";
        let ok = config(known, host, gateway).unwrap();
        let t: &crate::ssh::Target = target(&ok, "web-shell");
        assert_eq!(t.target_host.as_deref(), Some("db1.internal:22"));
        let err = |k, t, a| config(k, t, a).unwrap_err().to_string();
        assert!(
            err(known, "", gateway).contains("needs `target_host"),
            "no target_host"
        );
        assert!(
            err("", host, gateway).contains("needs `known_hosts"),
            "no known_hosts"
        );
        assert!(
            err(known, host, "").contains("only used by the gateway"),
            "not a gateway entitlement"
        );
        assert!(
            err(known, "target_host = \"db1\"", gateway).contains("must be host:port"),
            "no port"
        );
        // Certificates to one's own key still need none of it.
        config("", "", "").unwrap();
    }

    #[test]
    fn unknown_provider_kind_is_refused_naming_the_known_ones() {
        let err = parse(&SAMPLE.replace("kind = \"postgres\"", "kind = \"oracle\""))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("unknown kind `oracle`") && err.contains("postgres, mysql"),
            "{err}"
        );
    }

    #[test]
    fn a_wrongly_typed_provider_key_names_key_and_line() {
        let err = parse(&SAMPLE.replace(
            "url = \"postgres://postgres@127.0.0.1:5432/postgres\"",
            "url = \"postgres://postgres@127.0.0.1:5432/postgres\"\nconnection_limit = \"ten\"",
        ))
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("[providers.pg-main]")
                && err.contains("line 17")
                && err.contains("connection_limit"),
            "{err}"
        );
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

    /// The provider snippets from the providers issue, verbatim.
    const PROVIDERS: &str = r#"
[providers.ssh-prod]
kind = "ssh"
ca_key = "ssh_ca"        # OpenSSH private key file, relative to the config; generated (Ed25519) if missing

[[entitlement]]
name = "web-deploy"
provider = "ssh-prod"
principals = ["deploy"]  # certificate principals (remote login names)
max_duration = "1h"
approvals = { count = 1, reviewers = ["sre"] }

[providers.k8s-prod]
kind = "kubernetes"
kubeconfig = "kubeconfig.yaml"   # or in-cluster service account

[[entitlement]]
name = "payments-k8s-edit"
provider = "k8s-prod"
cluster_role = "edit"
namespace = "payments"           # omit for a ClusterRoleBinding
max_duration = "1h"
approvals = { count = 1, reviewers = ["sre"] }

[providers.gcp-prod]
kind = "gcp-iam"
resource = "projects/payments-prod"     # or folders/…, organizations/…
credentials = "sa.json"                  # service account key; or the metadata server
endpoint = "https://cloudresourcemanager.googleapis.com"   # overridable for tests

[[entitlement]]
name = "payments-spanner-write"
provider = "gcp-prod"
role = "roles/spanner.databaseUser"
max_duration = "1h"
approvals = { count = 1, reviewers = ["sre"] }

[providers.legacy]
kind = "command"
grant = ["/path/prog", "{principal}", "{role}", "{not_after}"]
revoke = ["/path/prog", "--revoke", "{principal}"]
list = ["/path/prog", "--list"]

[providers.maria]
kind = "mysql"
url = "mysql://airlock@127.0.0.1:3306/"

[[entitlement]]
name = "orders-write"
provider = "maria"
role = "orders_writer"
max_duration = "1h"
approvals = { count = 1, reviewers = ["sre"] }
"#;

    #[test]
    fn every_provider_kind_parses_with_its_target() {
        let c = Config::parse(&format!("{SAMPLE}{PROVIDERS}")).unwrap();
        let ssh = target::<crate::ssh::config::Target>(&c, "web-deploy");
        assert_eq!(ssh.principals, ["deploy"]);
        assert_eq!(ssh.extensions, ["permit-pty"]);
        let k8s = target::<crate::kubernetes::config::Target>(&c, "payments-k8s-edit");
        assert_eq!(k8s.cluster_role, "edit");
        assert_eq!(k8s.namespace.as_deref(), Some("payments"));
        let gcp = target::<crate::gcp_iam::config::Target>(&c, "payments-spanner-write");
        assert_eq!(gcp.role, "roles/spanner.databaseUser");
        assert_eq!(c.providers.len(), 6);
        assert_eq!(c.provider_configs().len(), 6);
    }

    fn refusal(extra: &str) -> String {
        Config::parse(&format!("{SAMPLE}{PROVIDERS}{extra}"))
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn keys_and_targets_that_do_not_fit_the_kind_are_refused() {
        let err = refusal("[providers.x]\nkind = \"ssh\"\n");
        assert!(err.contains("kind ssh needs `ca_key`"), "{err}");
        let err = refusal("[providers.x]\nkind = \"ssh\"\nca_key = \"k\"\nurl = \"u\"\n");
        assert!(err.contains("`url` does not apply to kind ssh"), "{err}");
        let err = refusal("[providers.x]\nkind = \"gcp-iam\"\nresource = \"buckets/x\"\n");
        assert!(err.contains("projects/ID"), "{err}");
        let ent = |provider: &str, body: &str| {
            format!("[[entitlement]]\nname = \"e2\"\nprovider = \"{provider}\"\n{body}\nmax_duration = \"1h\"\napprovals = {{ count = 1, reviewers = [\"sre\"] }}\n")
        };
        let err = refusal(&ent("ssh-prod", ""));
        assert!(err.contains("so `principals` is required"), "{err}");
        let err = refusal(&ent("ssh-prod", "principals = [\"root; rm\"]"));
        assert!(err.contains("not a valid login name"), "{err}");
        let err = refusal(&ent("k8s-prod", "cluster_role = \"edit\"\nrole = \"x\""));
        assert!(err.contains("`role` does not apply"), "{err}");
        let err = refusal(&ent(
            "k8s-prod",
            "cluster_role = \"edit\"\nnamespace = \"Pay_ments\"",
        ));
        assert!(err.contains("not a valid Kubernetes name"), "{err}");
        let err = refusal(&ent("gcp-prod", "role = \"owner\""));
        assert!(err.contains("roles/spanner.databaseUser"), "{err}");
        let err = refusal(&ent("maria", "role = \"a`b\""));
        assert!(err.contains("is not valid"), "{err}");
    }
}
