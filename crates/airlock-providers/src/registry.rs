//! The provider kinds built into this binary. Each kind is a folder with a
//! `config.rs` that declares, by convention:
//!
//! - `KIND`: the `kind = "..."` value;
//! - `Config`: the `[providers.NAME]` keys (serde, `deny_unknown_fields`) and
//!   `Config::validate`;
//! - `Target`: the kind's `[[entitlement]]` keys (serde, `deny_unknown_fields`)
//!   and `Target::validate`;
//! - `example(key)`: a value to show when a required section key is missing;
//! - `build(name, &Config, &ProviderContext)`: the constructor.
//!
//! Adding a kind is that folder, its `pub mod` line in `lib.rs` and one line
//! in the [`kinds!`] list below.

use std::sync::Arc;

use airlock_core::config::{KeyError, RawKeys};
use airlock_core::{EntitlementName, ProviderName};
use serde::de::DeserializeOwned;

use crate::{BuildError, ConfigError, InvalidValue, Provider, ProviderContext};

/// A kind's target type, found inside an [`EntitlementTarget`].
pub trait KindTarget: Sized {
    /// The target if it is this kind's.
    fn of(target: &EntitlementTarget) -> Option<&Self>;
}

/// Declares the kinds: the typed section and target enums and the dispatch
/// from a kind name to its module, so no other file lists the kinds.
macro_rules! kinds {
    ($($variant:ident => $module:ident,)+) => {
        /// A `[providers.NAME]` section, read and checked by its kind.
        #[derive(Debug, Clone, PartialEq)]
        pub enum ProviderConfig {
            $(
                #[doc = concat!("See [`crate::", stringify!($module), "::config::Config`].")]
                $variant(crate::$module::config::Config),
            )+
        }

        /// An entitlement's provider-specific keys, read and checked by its provider's kind.
        #[derive(Debug, Clone, PartialEq)]
        pub enum EntitlementTarget {
            $(
                #[doc = concat!("See [`crate::", stringify!($module), "::config::Target`].")]
                $variant(crate::$module::config::Target),
            )+
        }

        /// Kind names this build knows.
        pub const KINDS: &[&str] = &[$(crate::$module::config::KIND),+];

        impl ProviderConfig {
            /// Reads `[providers.NAME]` as `kind`.
            pub fn read(
                provider: &ProviderName,
                kind: &str,
                keys: &RawKeys,
            ) -> Result<ProviderConfig, ConfigError> {
                $(
                    if kind == crate::$module::config::KIND {
                        use crate::$module::config as c;
                        return read_section(provider, c::KIND, keys, c::example, c::Config::validate)
                            .map(ProviderConfig::$variant);
                    }
                )+
                Err(ConfigError::UnknownKind {
                    provider: provider.clone(),
                    kind: kind.to_string(),
                })
            }

            /// The kind name.
            pub fn kind(&self) -> &'static str {
                match self {
                    $(ProviderConfig::$variant(_) => crate::$module::config::KIND,)+
                }
            }

            /// Reads an entitlement's provider-specific keys as this provider's kind.
            pub fn read_target(
                &self,
                entitlement: &EntitlementName,
                provider: &ProviderName,
                keys: &RawKeys,
            ) -> Result<EntitlementTarget, ConfigError> {
                match self {
                    $(
                        ProviderConfig::$variant(_) => {
                            use crate::$module::config as c;
                            read_target(entitlement, provider, c::KIND, keys, c::Target::validate)
                                .map(EntitlementTarget::$variant)
                        }
                    )+
                }
            }

            /// Builds the provider (reads the files the section names; connects on first use).
            pub fn build(
                &self,
                name: &ProviderName,
                ctx: &ProviderContext,
            ) -> Result<Arc<dyn Provider>, BuildError> {
                match self {
                    $(ProviderConfig::$variant(c) => crate::$module::config::build(name, c, ctx),)+
                }
            }
        }

        $(
            impl KindTarget for crate::$module::config::Target {
                fn of(target: &EntitlementTarget) -> Option<&Self> {
                    match target {
                        EntitlementTarget::$variant(t) => Some(t),
                        #[allow(unreachable_patterns)]
                        _ => None,
                    }
                }
            }
        )+
    };
}

kinds! {
    Postgres => postgres,
    Mysql => mysql,
    Ssh => ssh,
    Kubernetes => kubernetes,
    GcpIam => gcp_iam,
    Command => command,
}

/// Reads a section as `C`, phrasing key errors for a provider section.
fn read_section<C: DeserializeOwned>(
    provider: &ProviderName,
    kind: &'static str,
    keys: &RawKeys,
    example: fn(&str) -> &'static str,
    validate: fn(&C) -> Result<(), InvalidValue>,
) -> Result<C, ConfigError> {
    let table = format!("[providers.{provider}]");
    let config: C = keys.parse().map_err(|e| match e {
        KeyError::Unknown {
            key,
            line,
            expected,
        } => ConfigError::ProviderKey {
            provider: provider.clone(),
            kind,
            key,
            line,
            takes: expected,
        },
        KeyError::Missing { key } => ConfigError::ProviderNeeds {
            provider: provider.clone(),
            kind,
            key,
            example: example(key),
        },
        other => ConfigError::Keys {
            table: table.clone(),
            source: other,
        },
    })?;
    validate(&config).map_err(|e| ConfigError::Value {
        line: keys.line(e.key),
        table,
        detail: e.detail,
    })?;
    Ok(config)
}

/// Reads an entitlement's keys as `T`, phrasing key errors for an entitlement.
fn read_target<T: DeserializeOwned>(
    entitlement: &EntitlementName,
    provider: &ProviderName,
    kind: &'static str,
    keys: &RawKeys,
    validate: fn(&T) -> Result<(), InvalidValue>,
) -> Result<T, ConfigError> {
    let table = format!("[[entitlement]] `{entitlement}`");
    let target: T = keys.parse().map_err(|e| match e {
        KeyError::Unknown {
            key,
            line,
            expected,
        } => ConfigError::TargetKey {
            entitlement: entitlement.clone(),
            provider: provider.clone(),
            kind,
            key,
            line,
            takes: expected,
        },
        KeyError::Missing { key } => ConfigError::TargetNeeds {
            entitlement: entitlement.clone(),
            provider: provider.clone(),
            kind,
            key,
        },
        other => ConfigError::Keys {
            table: table.clone(),
            source: other,
        },
    })?;
    validate(&target).map_err(|e| ConfigError::Value {
        line: keys.line(e.key),
        table,
        detail: e.detail,
    })?;
    Ok(target)
}
