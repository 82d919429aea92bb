//! `kind = "command"`: the section and entitlement keys, their checks and the constructor.

use std::sync::Arc;

use airlock_core::{ProviderName, Span};
use serde::Deserialize;

use crate::checks::is_plain_name;
use crate::{BuildError, InvalidValue, Provider, ProviderContext};

/// The `kind` value.
pub const KIND: &str = "command";

/// `[providers.NAME]` with `kind = "command"`.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// argv run to apply a grant (placeholders substitute inside one element).
    pub grant: Vec<String>,
    /// argv run to remove a grant.
    pub revoke: Vec<String>,
    /// argv that prints managed accounts as JSON lines.
    pub list: Option<Vec<String>>,
    /// How long one program may run (default 30s).
    pub timeout: Option<Span>,
}

impl Config {
    /// Checks the argv templates: an absolute program (no shell is used) and
    /// only known placeholders, so a typo fails at start-up, not at a grant.
    pub fn validate(&self) -> Result<(), InvalidValue> {
        check_argv("grant", &self.grant)?;
        check_argv("revoke", &self.revoke)?;
        if let Some(list) = &self.list {
            check_argv("list", list)?;
        }
        Ok(())
    }
}

fn check_argv(key: &'static str, argv: &[String]) -> Result<(), InvalidValue> {
    match argv.first() {
        Some(p) if p.starts_with('/') => {}
        _ => {
            return Err(InvalidValue::new(
                key,
                format!("`{key}` must start with an absolute program path (no shell is used)"),
            ))
        }
    }
    for arg in argv {
        if arg.contains('\0') {
            return Err(InvalidValue::new(
                key,
                format!("`{key}` has a NUL byte in `{arg}`"),
            ));
        }
        for p in super::placeholders(arg) {
            // `list` runs without a grant, so nothing can be substituted.
            if key == "list" || !super::PLACEHOLDERS.contains(&p) {
                let known = if key == "list" {
                    "none".to_string()
                } else {
                    super::PLACEHOLDERS.join(", ")
                };
                return Err(InvalidValue::new(
                    key,
                    format!("`{key}` uses unknown placeholder {{{p}}} (known: {known})"),
                ));
            }
        }
    }
    Ok(())
}

/// A command entitlement's keys.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Target {
    /// Substituted for `{role}`.
    pub role: Option<String>,
}

impl Target {
    /// Checks values beyond their types.
    pub fn validate(&self) -> Result<(), InvalidValue> {
        if let Some(role) = &self.role {
            if !is_plain_name(role, b"./") {
                return Err(InvalidValue::new(
                    "role",
                    format!("role `{role}` is not valid: letters, digits, _ - . /"),
                ));
            }
        }
        Ok(())
    }
}

/// A value to show when `key` is missing.
pub fn example(_key: &str) -> &'static str {
    " = [\"/path/prog\", \"{principal}\", \"{role}\", \"{not_after}\"]"
}

/// Builds the provider; runs nothing.
pub fn build(
    name: &ProviderName,
    config: &Config,
    ctx: &ProviderContext,
) -> Result<Arc<dyn Provider>, BuildError> {
    Ok(Arc::new(super::CommandProvider::new(
        name.clone(),
        config,
        &ctx.config_dir,
    )?))
}
