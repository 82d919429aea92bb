//! Who is acting: a user or service account with groups, resolved at the edge
//! from a token (or, later, an OIDC login).

use std::collections::BTreeSet;

use crate::names::{GroupName, UserName};

/// An authenticated caller.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Principal {
    /// User or service-account name.
    pub name: UserName,
    /// Groups from the catalog plus any the token carries.
    pub groups: BTreeSet<GroupName>,
    /// Email from the catalog `[[user]]` entry or the identity provider.
    pub email: Option<String>,
    /// Admins manage tokens and may revoke any grant; they do not bypass approval.
    pub admin: bool,
    /// Whether the login used multi-factor authentication (OIDC `amr`).
    pub mfa: bool,
}

impl Principal {
    /// Whether `entry` (a user or group name from the catalog) designates this principal.
    pub fn matches(&self, entry: &str) -> bool {
        self.name.as_str() == entry || self.groups.iter().any(|g| g.as_str() == entry)
    }
}
