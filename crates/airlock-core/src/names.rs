//! Names from the catalog and from identities, validated once at the edge so
//! nothing past it re-checks them (and they are safe in logs and role names).

use std::fmt;

/// Longest name accepted anywhere.
pub const MAX_NAME_LEN: usize = 128;

fn check(kind: &'static str, s: &str) -> Result<(), crate::Error> {
    let ok_first = s.chars().next().is_some_and(|c| c.is_ascii_alphanumeric());
    let ok_rest = s
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '@' | '+'));
    if s.is_empty() || s.len() > MAX_NAME_LEN || !ok_first || !ok_rest {
        return Err(crate::Error::invalid(
            kind,
            format!(
                "`{}` must be 1-{MAX_NAME_LEN} characters of letters, digits, - _ . @ +, starting with a letter or digit",
                s.chars().take(40).collect::<String>()
            ),
        ));
    }
    Ok(())
}

macro_rules! name_type {
    ($(#[$doc:meta])* $ty:ident, $kind:literal) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
        #[serde(transparent)]
        pub struct $ty(String);

        impl $ty {
            /// Validates and wraps a name.
            pub fn parse(s: &str) -> Result<Self, crate::Error> {
                check($kind, s)?;
                Ok(Self(s.to_owned()))
            }
            /// The name as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl<'de> serde::Deserialize<'de> for $ty {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                Self::parse(&s).map_err(serde::de::Error::custom)
            }
        }
    };
}

name_type!(
    /// Name of an entitlement in the catalog.
    EntitlementName, "entitlement"
);
name_type!(
    /// Name of a configured provider instance (`[providers.NAME]`).
    ProviderName, "provider"
);
name_type!(
    /// Name of a group of principals.
    GroupName, "group"
);
name_type!(
    /// Name of a principal (user or service account).
    UserName, "user"
);
name_type!(
    /// Name of a `[[tool]]` the proxy runs (what users type after `airlock exec --`).
    ToolName, "tool"
);
name_type!(
    /// Name of an `[[operation]]` in the catalog.
    OperationName, "operation"
);
name_type!(
    /// Name of a `[[service]]` in the service catalog.
    ServiceName, "service"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_catalog_and_email_like_names() {
        assert!(EntitlementName::parse("payments-db-write").is_ok());
        assert!(UserName::parse("alice@example.com").is_ok());
    }

    #[test]
    fn refuses_quotes_spaces_and_empty() {
        for bad in ["", "a b", "x\"y", "-lead", "a;drop", "é", &"x".repeat(129)] {
            assert!(UserName::parse(bad).is_err(), "{bad:?} accepted");
        }
    }
}
