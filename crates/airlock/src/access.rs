//! Client commands that cut people off: `token list|revoke`, `lock`,
//! `unlock`, `user rebind` (all admin).

use anyhow::Result;
use clap::Subcommand;
use serde_json::{json, Value};

use crate::client::Client;
use crate::{emit, urlencode, Output};

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

fn token_line(t: &Value) -> String {
    format!(
        "{}  {:<24} created {}  expires {}  last used {}{}{}",
        t["prefix"].as_str().unwrap_or(""),
        t["user"].as_str().unwrap_or(""),
        t["created_at"].as_str().unwrap_or(""),
        t["expires_at"].as_str().unwrap_or(""),
        t["last_used_at"].as_str().unwrap_or("never"),
        if t["admin"] == true { "  admin" } else { "" },
        if t["session"] == true {
            "  (web session)"
        } else {
            ""
        },
    )
}

fn lines(items: &Value, line: fn(&Value) -> String, empty: &str) -> String {
    match items.as_array() {
        Some(a) if !a.is_empty() => a.iter().map(line).collect::<Vec<_>>().join("\n"),
        _ => empty.to_string(),
    }
}

/// `airlock token list [--user U]`.
pub fn token_list(c: &Client, out: Output, user: Option<String>) -> Result<()> {
    let path = match user {
        Some(u) => format!("/api/v1/tokens?user={}", urlencode(&u)),
        None => "/api/v1/tokens".into(),
    };
    // Every page: an admin cutting someone off must see all of their tokens.
    let v = c.get_all(&path, 1000)?;
    emit(out, &v, |v| lines(v, token_line, "no live tokens"));
    Ok(())
}

/// `airlock token revoke PREFIX | --user U`.
pub fn token_revoke(
    c: &Client,
    out: Output,
    prefix: Option<String>,
    user: Option<String>,
) -> Result<()> {
    let v = c.post(
        "/api/v1/tokens/revoke",
        &json!({"prefix": prefix, "user": user}),
    )?;
    emit(out, &v, |v| {
        let n = v["revoked"].as_array().map_or(0, Vec::len);
        format!(
            "revoked {n} token(s) and the web sessions started from them\n{}",
            lines(&v["revoked"], token_line, "")
        )
    });
    Ok(())
}

fn lock_line(l: &Value) -> String {
    format!(
        "{} {}: {} (by {} at {}, {})",
        l["kind"].as_str().unwrap_or(""),
        l["name"].as_str().unwrap_or(""),
        l["reason"].as_str().unwrap_or(""),
        l["created_by"].as_str().unwrap_or(""),
        l["created_at"].as_str().unwrap_or(""),
        l["expires_at"]
            .as_str()
            .map_or("until unlocked".to_string(), |t| format!("until {t}")),
    )
}

/// `airlock lock …`.
pub fn lock(c: &Client, out: Output, command: LockCommand) -> Result<()> {
    let (kind, name, reason, duration) = match command {
        LockCommand::List => {
            let v = c.get("/api/v1/locks")?;
            emit(out, &v, |v| lines(v, lock_line, "no locks"));
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
    let v = c.post(
        "/api/v1/locks",
        &json!({"kind": kind, "name": name, "reason": reason, "for": duration}),
    )?;
    emit(out, &v, |v| {
        let n = |k: &str| v["enforced"][k].as_array().map_or(0, Vec::len);
        format!(
            "locked {}\n{} grant(s) revoked, {} pending request(s) withdrawn, {} run(s) cancelled",
            lock_line(v),
            n("revoked"),
            n("withdrawn"),
            n("cancelled_runs")
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
    let v = c.delete(&format!("/api/v1/locks/{kind}/{}", urlencode(&name)))?;
    emit(out, &v, |_| format!("unlocked {kind} {name}"));
    Ok(())
}

/// `airlock user rebind NAME`.
pub fn user(c: &Client, out: Output, command: UserCommand) -> Result<()> {
    let UserCommand::Rebind { name } = command;
    let v = c.post(
        &format!("/api/v1/users/{}/rebind", urlencode(&name)),
        &json!({}),
    )?;
    emit(out, &v, |v| {
        format!(
            "`{}` is released: the next OIDC login under this name binds it",
            v["user"].as_str().unwrap_or("")
        )
    });
    Ok(())
}
