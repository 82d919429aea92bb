//! Login identities. An OIDC principal is `(issuer, sub)`: the login name it
//! presented first is bound to it and kept, so a later login with another
//! subject presenting the same name is refused (until an admin rebinds it),
//! and no login name may be a group name of the catalog.

use std::sync::Arc;

use airlock_core::audit_chain::AuditDraft;
use airlock_core::oidc::OidcConfig;
use airlock_core::principal::Designee;
use airlock_core::{Error, GroupName, Principal, UserName};
use airlock_store::BindOutcome;
use serde_json::{json, Map, Value};

use crate::app::App;
use crate::problem::ApiError;

/// Longest `sub` claim accepted (OIDC Core says at most 255 ASCII characters).
const MAX_SUBJECT_LEN: usize = 255;

/// Refuses a login name that is a group of the catalog, including owners
/// from a `catalog_url` copy (which changes at run time).
pub fn check_login_name(app: &App, name: &UserName) -> Result<(), Error> {
    app.config.check_login_name(name)?;
    let catalog = app.service_catalog();
    for s in catalog.iter() {
        for o in &s.owners {
            let group = match Designee::of(o) {
                Designee::Group(g) => g,
                Designee::Either(g) if !app.config.users.contains_key(name) => g,
                _ => continue,
            };
            if group.eq_ignore_ascii_case(name.as_str()) {
                return Err(Error::forbidden(format!(
                    "`{name}` is the name of a group (an owner of service `{}`), so it cannot be a user's login name; use another name",
                    s.name
                )));
            }
        }
    }
    Ok(())
}

/// The principal of a verified OIDC login, after the identity checks; also
/// returns the identity provider's groups for the session to keep.
pub async fn oidc_login(
    app: &Arc<App>,
    oidc: &OidcConfig,
    claims: &Map<String, Value>,
) -> Result<(Principal, Vec<GroupName>), ApiError> {
    let (mut who, groups) = crate::oidc::principal(&app.config, oidc, claims)?;
    let issuer = claims
        .get("iss")
        .and_then(Value::as_str)
        .unwrap_or(&oidc.issuer)
        .to_string();
    let subject = claims
        .get("sub")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty() && s.len() <= MAX_SUBJECT_LEN && !s.chars().any(char::is_control))
        .ok_or_else(|| {
            ApiError::from(Error::forbidden(
                "the ID token has no valid `sub` claim: the identity provider must send one (OIDC Core 2)",
            ))
        })?
        .to_string();
    let name = who.name.clone();
    let refuse = |why: String| {
        let app = app.clone();
        let (issuer, subject, name) = (issuer.clone(), subject.clone(), name.clone());
        async move {
            let audit = AuditDraft::new(
                "login.refused",
                name.as_str(),
                format!("user:{name}"),
                json!({"issuer": issuer, "subject": subject, "reason": why}),
            );
            let now = app.now();
            app.svc.db(move |s| s.append_audit(&[audit], now)).await?;
            tracing::warn!(user = %name, reason = %why, "login refused");
            Err::<(Principal, Vec<GroupName>), ApiError>(Error::forbidden(why).into())
        }
    };
    if let Err(e) = check_login_name(app, &name) {
        return refuse(reason(e)).await;
    }
    if let Some(pin) = app
        .config
        .users
        .get(&name)
        .and_then(|u| u.oidc_subject.as_ref())
    {
        if *pin != subject {
            return refuse(format!(
                "the name `{name}` is pinned to another identity ([[user]] oidc_subject); \
                 log in with your own account, or ask an admin to correct the catalog"
            ))
            .await;
        }
        return Ok((who, groups));
    }
    let audit = AuditDraft::new(
        "identity.bound",
        name.as_str(),
        format!("user:{name}"),
        json!({"issuer": issuer, "subject": subject}),
    );
    let now = app.now();
    let (iss, sub, n) = (issuer.clone(), subject.clone(), name.clone());
    let outcome = app
        .svc
        .db(move |s| s.bind_identity(&iss, &sub, &n, &audit, now))
        .await?;
    match outcome {
        BindOutcome::Bound => Ok((who, groups)),
        BindOutcome::Existing(bound) if bound == name => Ok((who, groups)),
        BindOutcome::Existing(bound) => {
            // The identity provider renamed this person: they keep the name
            // they were bound to, with the catalog's view of that name.
            if let Err(e) = check_login_name(app, &bound) {
                return refuse(reason(e)).await;
            }
            let mut renamed = app.config.principal(bound, &groups, false);
            renamed.mfa = who.mfa;
            renamed.email = who.email.take().or(renamed.email);
            Ok((renamed, groups))
        }
        BindOutcome::Taken { .. } => {
            refuse(format!(
                "the name `{name}` belongs to another identity at the identity provider; \
                 if this is a new account of the same person, an admin can release the name with \
                 `airlock user rebind {name}`"
            ))
            .await
        }
    }
}

fn reason(e: Error) -> String {
    match e {
        Error::Forbidden { reason } => reason,
        other => other.to_string(),
    }
}

/// `airlock user rebind NAME`: an admin releases a name so the next login binds it anew.
pub async fn rebind(app: &Arc<App>, who: &Principal, name: &str) -> Result<bool, ApiError> {
    if !who.admin {
        return Err(Error::forbidden("only admins can rebind a user name").into());
    }
    let name = UserName::parse(name)?;
    let audit = AuditDraft::new(
        "user.rebound",
        who.name.as_str(),
        format!("user:{name}"),
        json!({}),
    );
    let now = app.now();
    let released = app
        .svc
        .db(move |s| s.unbind_identity(&name, &audit, now))
        .await?;
    Ok(released)
}
