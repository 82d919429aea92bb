//! Client commands that cut people off: `token list|revoke`, `lock`,
//! `unlock`, `user rebind` (all admin).

use airlock_api::access::{
    LockPlaced, LockView, NewLock, Rebound, RevokeTokens, RevokedTokens, TokenView, Unlocked,
};
use anyhow::Result;
use clap::Subcommand;

use crate::client::Client;
use crate::{emit_as, urlencode, Output};

/// `airlock lock …`.
#[derive(Subcommand)]
pub enum LockCommand {
    /// Lock a user: grants revoked, requests and runs cancelled, tokens refused.
    User {
        name: String,
        #[arg(long)]
        reason: String,
        /// Lift it by itself after this long (e.g. 1h); default: until `airlock unlock`.
        #[arg(long = "for", value_name = "DURATION")]
        duration: Option<String>,
    },
    /// Lock an entitlement: active grants revoked, new requests refused.
    Entitlement {
        name: String,
        #[arg(long)]
        reason: String,
        #[arg(long = "for", value_name = "DURATION")]
        duration: Option<String>,
    },
    /// Locks in force.
    List,
}

/// `airlock unlock …`.
#[derive(Subcommand)]
pub enum UnlockCommand {
    /// Lift a user lock.
    User { name: String },
    /// Lift an entitlement lock.
    Entitlement { name: String },
}

/// `airlock user …`.
#[derive(Subcommand)]
pub enum UserCommand {
    /// Release a name bound to an OIDC identity, so the next login binds it anew.
    Rebind { name: String },
}

fn token_line(t: &TokenView) -> String {
    format!(
        "{}  {:<24} created {}  expires {}  last used {}{}{}",
        t.prefix,
        t.user,
        t.created_at,
        t.expires_at,
        t.last_used_at.as_deref().unwrap_or("never"),
        if t.admin { "  admin" } else { "" },
        if t.session { "  (web session)" } else { "" },
    )
}

fn lines<T>(items: &[T], line: fn(&T) -> String, empty: &str) -> String {
    if items.is_empty() {
        return empty.to_string();
    }
    items.iter().map(line).collect::<Vec<_>>().join("\n")
}

/// `airlock token list [--user U]`.
pub fn token_list(c: &Client, out: Output, user: Option<String>) -> Result<()> {
    let path = match user {
        Some(u) => format!("/api/v1/tokens?user={}", urlencode(&u)),
        None => "/api/v1/tokens".into(),
    };
    // Every page: an admin cutting someone off must see all of their tokens.
    let tokens: Vec<TokenView> = serde_json::from_value(c.get_all(&path, 1000)?)?;
    emit_as(out, &tokens, |t| lines(t, token_line, "no live tokens"));
    Ok(())
}

/// `airlock token revoke PREFIX | --user U`.
pub fn token_revoke(
    c: &Client,
    out: Output,
    prefix: Option<String>,
    user: Option<String>,
) -> Result<()> {
    let v: RevokedTokens = c.post_as("/api/v1/tokens/revoke", &RevokeTokens { prefix, user })?;
    emit_as(out, &v, |v| {
        format!(
            "revoked {} token(s) and the web sessions started from them\n{}",
            v.revoked.len(),
            lines(&v.revoked, token_line, "")
        )
    });
    Ok(())
}

fn lock_line(l: &LockView) -> String {
    format!(
        "{} {}: {} (by {} at {}, {})",
        l.kind,
        l.name,
        l.reason,
        l.created_by,
        l.created_at,
        l.expires_at
            .as_ref()
            .map_or("until unlocked".to_string(), |t| format!("until {t}")),
    )
}

/// `airlock lock …`.
pub fn lock(c: &Client, out: Output, command: LockCommand) -> Result<()> {
    let (kind, name, reason, duration) = match command {
        LockCommand::List => {
            let locks: Vec<LockView> = c.get_as("/api/v1/locks")?;
            emit_as(out, &locks, |l| lines(l, lock_line, "no locks"));
            return Ok(());
        }
        LockCommand::User {
            name,
            reason,
            duration,
        } => ("user", name, reason, duration),
        LockCommand::Entitlement {
            name,
            reason,
            duration,
        } => ("entitlement", name, reason, duration),
    };
    let body = NewLock {
        kind: kind.into(),
        name,
        reason,
        duration,
    };
    let placed: LockPlaced = c.post_as("/api/v1/locks", &body)?;
    emit_as(out, &placed, |v| {
        format!(
            "locked {}\n{} grant(s) revoked, {} pending request(s) withdrawn, {} run(s) cancelled",
            lock_line(&v.lock),
            v.enforced.revoked.len(),
            v.enforced.withdrawn.len(),
            v.enforced.cancelled_runs.len()
        )
    });
    Ok(())
}

/// `airlock unlock …`.
pub fn unlock(c: &Client, out: Output, command: UnlockCommand) -> Result<()> {
    let (kind, name) = match command {
        UnlockCommand::User { name } => ("user", name),
        UnlockCommand::Entitlement { name } => ("entitlement", name),
    };
    let v: Unlocked = c.delete_as(&format!("/api/v1/locks/{kind}/{}", urlencode(&name)))?;
    emit_as(out, &v, |_| format!("unlocked {kind} {name}"));
    Ok(())
}

/// `airlock user rebind NAME`.
pub fn user(c: &Client, out: Output, command: UserCommand) -> Result<()> {
    let UserCommand::Rebind { name } = command;
    let v: Rebound = c.post_as(
        &format!("/api/v1/users/{}/rebind", urlencode(&name)),
        &serde_json::json!({}),
    )?;
    emit_as(out, &v, |v| {
        format!(
            "`{}` is released: the next OIDC login under this name binds it",
            v.user
        )
    });
    Ok(())
}
