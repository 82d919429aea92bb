//! The errors of reading provider configuration and of building providers.

use airlock_core::config::KeyError;
use airlock_core::{EntitlementName, ProviderName};

use crate::registry::KINDS;

/// A value a kind refuses, naming the key so the error can show its line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{detail}")]
pub struct InvalidValue {
    /// The key whose value is refused.
    pub key: &'static str,
    /// What is wrong and what to write instead.
    pub detail: String,
}

impl InvalidValue {
    /// A refusal of `key`'s value.
    pub fn new(key: &'static str, detail: impl Into<String>) -> Self {
        InvalidValue {
            key,
            detail: detail.into(),
        }
    }
}

/// A configuration file that does not fit its providers' kinds.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Core refused the file (syntax, shared keys, references).
    #[error(transparent)]
    Core(#[from] airlock_core::config::ConfigError),
    /// `kind` names no kind built into this binary.
    #[error("[providers.{provider}]: unknown kind `{kind}` (known: {})", KINDS.join(", "))]
    UnknownKind {
        /// The section.
        provider: ProviderName,
        /// The `kind` as written.
        kind: String,
    },
    /// A section key the kind does not take.
    #[error("[providers.{provider}], line {line}: `{key}` does not apply to kind {kind} (it takes: {})", takes.join(", "))]
    ProviderKey {
        /// The section.
        provider: ProviderName,
        /// Its kind.
        kind: &'static str,
        /// The key as written.
        key: String,
        /// Its line.
        line: usize,
        /// The keys the kind takes.
        takes: Vec<&'static str>,
    },
    /// A key the kind requires is missing from the section.
    #[error("[providers.{provider}]: kind {kind} needs `{key}`{example}")]
    ProviderNeeds {
        /// The section.
        provider: ProviderName,
        /// Its kind.
        kind: &'static str,
        /// The missing key.
        key: &'static str,
        /// ` = value` to copy, or empty.
        example: &'static str,
    },
    /// An entitlement key neither shared nor taken by its provider's kind.
    #[error("[[entitlement]] `{entitlement}`, line {line}: `{key}` does not apply to provider `{provider}` (kind {kind}; it takes: {}, besides the keys every entitlement has)", takes.join(", "))]
    TargetKey {
        /// The entitlement.
        entitlement: EntitlementName,
        /// Its provider.
        provider: ProviderName,
        /// The provider's kind.
        kind: &'static str,
        /// The key as written.
        key: String,
        /// Its line.
        line: usize,
        /// The entitlement keys the kind takes (besides the shared ones).
        takes: Vec<&'static str>,
    },
    /// A key the provider's kind requires is missing from the entitlement.
    #[error(
        "[[entitlement]] `{entitlement}`: provider `{provider}` is {kind}, so `{key}` is required"
    )]
    TargetNeeds {
        /// The entitlement.
        entitlement: EntitlementName,
        /// Its provider.
        provider: ProviderName,
        /// The provider's kind.
        kind: &'static str,
        /// The missing key.
        key: &'static str,
    },
    /// A key whose value has the wrong type or form for the kind.
    #[error("{}", source.in_table(table))]
    Keys {
        /// The table, such as `[providers.pg]`.
        table: String,
        /// The key, its line and what is wrong.
        source: KeyError,
    },
    /// A value the kind refuses.
    #[error("{table}, line {line}: {detail}")]
    Value {
        /// The table, such as `[providers.pg]`.
        table: String,
        /// The line of the key.
        line: usize,
        /// What is wrong and what to write instead.
        detail: String,
    },
}

/// A provider that cannot be set up from its (valid) configuration: a file it
/// names is missing or unusable, or a client cannot be made.
#[derive(Debug, Clone, thiserror::Error)]
pub enum BuildError {
    /// A configured value cannot be used as given.
    #[error("provider {provider}: {detail}")]
    Config {
        /// The provider.
        provider: String,
        /// What is wrong and what to do.
        detail: String,
    },
    /// A file the configuration names cannot be read or used.
    #[error("provider {provider}: {detail}")]
    File {
        /// The provider.
        provider: String,
        /// Which file, what is wrong and what to do.
        detail: String,
    },
    /// The adapter's client could not be set up.
    #[error("provider {provider}: {detail}")]
    Setup {
        /// The provider.
        provider: String,
        /// What failed.
        detail: String,
    },
}
