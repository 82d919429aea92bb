//! Cutting people off: tokens (`/api/v1/tokens`), locks (`/api/v1/locks`) and
//! identity rebinding (`/api/v1/users/{name}/rebind`); all admin-only.
//! Bodies a client sends refuse unknown fields; answers accept them, so an
//! older CLI keeps working against a newer server.

use serde::{Deserialize, Serialize};

/// A token as admins see it (never its secret; `prefix` is the start of the
/// SHA-256 of the secret, enough to name it in `airlock token revoke`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenView {
    /// First hex digits of the secret's SHA-256.
    pub prefix: String,
    /// Whose token it is.
    pub user: String,
    /// An admin token.
    pub admin: bool,
    /// Groups the token carries.
    pub groups: Vec<String>,
    /// Who made it (`admin`, `login:…` for web sessions, a user name).
    pub created_by: String,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339.
    pub expires_at: String,
    /// RFC 3339; at most a minute stale.
    pub last_used_at: Option<String>,
    /// A web session (started from a login or from another token).
    pub session: bool,
}

/// Body of `POST /api/v1/tokens/revoke`: exactly one of `prefix` and `user`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RevokeTokens {
    /// Hex digits of one token's hash (at least 8).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// Every token of this user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
}

/// Answer of `POST /api/v1/tokens/revoke`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevokedTokens {
    /// The tokens revoked (web sessions started from them end too).
    pub revoked: Vec<TokenView>,
}

/// A lock in force, as `GET /api/v1/locks` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockView {
    /// `user` or `entitlement`.
    pub kind: String,
    /// The user or entitlement locked.
    pub name: String,
    /// Why (shown to whoever is refused).
    pub reason: String,
    /// The admin who placed it.
    pub created_by: String,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339; `None`: until `airlock unlock`.
    pub expires_at: Option<String>,
}

/// Body of `POST /api/v1/locks`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewLock {
    /// `user` or `entitlement`.
    pub kind: String,
    /// The user or entitlement to lock.
    pub name: String,
    /// Why; required.
    pub reason: String,
    /// How long it holds (`1h`); absent = until unlocked.
    #[serde(rename = "for", default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<String>,
}

/// What placing a lock ended at once.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Enforcement {
    /// Active grants revoked (their removal on the provider is under way).
    pub revoked: Vec<String>,
    /// Pending requests withdrawn.
    pub withdrawn: Vec<String>,
    /// Runs cancelled.
    pub cancelled_runs: Vec<String>,
}

/// Answer of `POST /api/v1/locks`: the lock and what it ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockPlaced {
    /// The lock now in force.
    #[serde(flatten)]
    pub lock: LockView,
    /// What it ended at once.
    pub enforced: Enforcement,
}

/// Answer of `DELETE /api/v1/locks/{kind}/{name}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Unlocked {
    /// Always true.
    pub unlocked: bool,
    /// `user` or `entitlement`.
    pub kind: String,
    /// The user or entitlement.
    pub name: String,
}

/// Answer of `POST /api/v1/users/{name}/rebind`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rebound {
    /// Always true.
    pub rebound: bool,
    /// The login name released (lowercase).
    pub user: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_placed_lock_is_the_lock_plus_what_it_ended() {
        let placed = LockPlaced {
            lock: LockView {
                kind: "user".into(),
                name: "mallory".into(),
                reason: "laptop stolen".into(),
                created_by: "admin".into(),
                created_at: "2026-12-03T10:00:00Z".into(),
                expires_at: None,
            },
            enforced: Enforcement {
                revoked: vec!["abc".into()],
                ..Default::default()
            },
        };
        let v = serde_json::to_value(&placed).unwrap();
        assert_eq!(v["name"], "mallory", "flattened: {v}");
        assert_eq!(v["enforced"]["revoked"][0], "abc");
        assert_eq!(serde_json::from_value::<LockPlaced>(v).unwrap(), placed);
    }
}
