//! Who is acting: a user or service account with groups, resolved at the edge
//! from a token or an OIDC login.

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

/// What a catalog entry in `reviewers`, `requesters` or `owners` designates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Designee<'a> {
    /// `user:NAME`: exactly that user.
    User(&'a str),
    /// `group:NAME`: members of that group.
    Group(&'a str),
    /// A bare `NAME`: the user or the group of that name. Safe because no
    /// login name may equal a group name of the catalog (see `Config::check_login_name`).
    Either(&'a str),
}

impl<'a> Designee<'a> {
    /// Splits an entry into its kind and name.
    pub fn of(entry: &'a str) -> Designee<'a> {
        if let Some(n) = entry.strip_prefix("user:") {
            Designee::User(n)
        } else if let Some(n) = entry.strip_prefix("group:") {
            Designee::Group(n)
        } else {
            Designee::Either(entry)
        }
    }
}

/// Checks a `reviewers`/`requesters`/`owners` entry: `user:` needs a valid
/// user name, `group:` and bare entries a valid group name.
pub fn check_entry(entry: &str) -> Result<(), crate::Error> {
    match Designee::of(entry) {
        Designee::User(n) => UserName::parse(n).map(|_| ()),
        Designee::Group(n) | Designee::Either(n) => GroupName::parse(n).map(|_| ()),
    }
}

impl Principal {
    /// Whether `entry` (`user:NAME`, `group:NAME` or a bare name from the catalog) designates this principal.
    pub fn matches(&self, entry: &str) -> bool {
        let user = |n: &str| self.name.as_str() == n.to_ascii_lowercase();
        let group = |n: &str| self.groups.iter().any(|g| g.as_str() == n);
        match Designee::of(entry) {
            Designee::User(n) => user(n),
            Designee::Group(n) => group(n),
            Designee::Either(n) => user(n) || group(n),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(name: &str, groups: &[&str]) -> Principal {
        Principal {
            name: UserName::parse(name).unwrap(),
            groups: groups
                .iter()
                .map(|g| GroupName::parse(g).unwrap())
                .collect(),
            email: None,
            admin: false,
            mfa: false,
        }
    }

    #[test]
    fn explicit_prefixes_keep_users_and_groups_apart() {
        let sre_user = p("sre", &[]);
        let member = p("bob", &["sre"]);
        assert!(
            !sre_user.matches("group:sre"),
            "a user named sre is not the group sre"
        );
        assert!(member.matches("group:sre"));
        assert!(!member.matches("user:sre"));
        assert!(sre_user.matches("user:sre"));
        assert!(
            sre_user.matches("user:SRE"),
            "user names compare lowercased"
        );
        assert!(
            member.matches("sre") && sre_user.matches("sre"),
            "bare names keep working"
        );
    }
}
