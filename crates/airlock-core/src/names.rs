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

/// Longest user (login) name.
pub const MAX_USER_LEN: usize = 64;

/// User names are identities: lowercased so `Alice` and `alice` are one
/// person, and limited to `[a-z0-9._@-]` so they survive every provider's
/// role-name rules and can never look like a `user:`/`group:` prefix.
fn normalize_user(s: &str) -> Result<String, crate::Error> {
    let lower = s.to_ascii_lowercase();
    let ok_first = lower
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    let ok_rest = lower.chars().all(|c| {
        c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '@' | '-')
    });
    if lower.is_empty() || lower.len() > MAX_USER_LEN || !ok_first || !ok_rest {
        return Err(crate::Error::invalid(
            "user",
            format!(
                "`{}` is not a valid user name: 1-{MAX_USER_LEN} characters of a-z 0-9 . _ @ - (lowercased), starting with a letter or digit",
                s.chars().take(40).collect::<String>()
            ),
        ));
    }
    Ok(lower)
}

macro_rules! name_type {
    ($(#[$doc:meta])* $ty:ident, $kind:literal) => {
        name_type!($(#[$doc])* $ty, $kind, |s: &str| check($kind, s).map(|()| s.to_owned()));
    };
    ($(#[$doc:meta])* $ty:ident, $kind:literal, $normalize:expr) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
        #[serde(transparent)]
        pub struct $ty(String);

        impl $ty {
            /// Validates and wraps a name.
            pub fn parse(s: &str) -> Result<Self, crate::Error> {
                let normalize = $normalize;
                Ok(Self(normalize(s)?))
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
    /// Name of a principal (user or service account), normalised to lowercase.
    UserName, "user", normalize_user
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

    #[test]
    fn user_names_are_lowercased_and_limited_to_the_login_alphabet() {
        assert_eq!(
            UserName::parse("Alice@Example.COM").unwrap().as_str(),
            "alice@example.com"
        );
        for bad in [
            "alice+ops@example.com",
            "user:alice",
            "group:sre",
            &"a".repeat(65),
        ] {
            let err = UserName::parse(bad).unwrap_err().to_string();
            assert!(err.contains("a-z 0-9 . _ @ -"), "{bad:?}: {err}");
        }
        assert!(UserName::parse(&"a".repeat(64)).is_ok());
        // Other names keep their alphabet (groups come from identity providers as-is).
        assert!(GroupName::parse("Payments+Eng").is_ok());
    }
}
