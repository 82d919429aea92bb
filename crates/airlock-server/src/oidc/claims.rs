//! Verified ID-token claims to an airlock principal: `username_claim` as the
//! user name, `groups_claim` as extra groups (invalid names dropped with a
//! log), `admin_groups`, and MFA from `amr`/`acr`.

use airlock_core::config::Config;
use airlock_core::oidc::OidcConfig;
use airlock_core::{GroupName, Principal, UserName};
use serde_json::{Map, Value};

/// `amr` values (RFC 8176) that mean a factor beyond a password was used.
pub const MFA_AMR: &[&str] = &[
    "mfa", "mca", "otp", "hwk", "swk", "sms", "tel", "fpt", "face", "iris", "retina", "sc", "vbm",
];
/// Most groups taken from one token.
const MAX_GROUPS: usize = 256;

/// Whether the login used MFA: `amr` names a second factor, or `acr` is one of `mfa_acr`.
pub fn is_mfa(claims: &Map<String, Value>, mfa_acr: &[String]) -> bool {
    let amr = claims
        .get("amr")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .any(|m| MFA_AMR.contains(&m));
    let acr = claims
        .get("acr")
        .and_then(Value::as_str)
        .is_some_and(|a| mfa_acr.iter().any(|m| m == a));
    amr || acr
}

/// Maps verified claims to a principal, with catalog groups merged in; also
/// returns the groups the identity provider vouched for (what a session keeps).
pub fn principal(
    config: &Config,
    oidc: &OidcConfig,
    claims: &Map<String, Value>,
) -> Result<(Principal, Vec<GroupName>), airlock_core::Error> {
    let raw = claims
        .get(&oidc.username_claim)
        .and_then(Value::as_str)
        .ok_or_else(|| {
            airlock_core::Error::forbidden(format!(
                "the ID token has no `{}` claim (username_claim): ask the identity provider admin to release it, or change username_claim",
                oidc.username_claim
            ))
        })?;
    let name = UserName::parse(raw).map_err(|e| {
        airlock_core::Error::forbidden(format!(
            "the ID token's `{}` claim is not a valid airlock user name: {e}",
            oidc.username_claim
        ))
    })?;
    let values: Vec<&str> = match claims.get(&oidc.groups_claim) {
        Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).collect(),
        Some(Value::String(s)) => vec![s.as_str()],
        _ => vec![],
    };
    let mut groups = Vec::new();
    for g in values.into_iter().take(MAX_GROUPS) {
        match GroupName::parse(g) {
            Ok(g) => groups.push(g),
            Err(e) => {
                tracing::warn!(user = %name, group = %g.chars().take(60).collect::<String>(), error = %e,
                "dropping a group from the ID token that is not a valid airlock group name")
            }
        }
    }
    let mut p = config.principal(name, &groups, false);
    p.mfa = is_mfa(claims, &oidc.mfa_acr_values);
    if p.email.is_none() {
        p.email = claims
            .get("email")
            .and_then(Value::as_str)
            .filter(|e| airlock_core::notify::is_email(e))
            .map(str::to_string);
    }
    Ok((p, groups))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn claims(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn password_only_login_is_not_mfa_but_a_second_factor_is() {
        assert!(!is_mfa(&claims(json!({"amr": ["pwd"]})), &[]));
        assert!(is_mfa(&claims(json!({"amr": ["pwd", "otp"]})), &[]));
        assert!(is_mfa(&claims(json!({"amr": ["mfa"]})), &[]));
        assert!(!is_mfa(
            &claims(json!({"acr": "urn:x:pwd"})),
            &["urn:x:mfa".into()]
        ));
        assert!(is_mfa(
            &claims(json!({"acr": "urn:x:mfa"})),
            &["urn:x:mfa".into()]
        ));
    }
}
