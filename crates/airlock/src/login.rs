//! `airlock login` / `airlock logout`: the server runs the OIDC device flow;
//! the CLI shows the code, polls, and keeps the resulting session token in
//! `$XDG_CONFIG_HOME/airlock/token` (or `~/.config/airlock/token`), mode 0600.
//! A token file readable by others is refused, not used.

use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use serde_json::{json, Value};

use crate::client::Client;

/// Largest token file read.
const MAX_TOKEN_FILE: u64 = 4096;

/// Where the session token is kept.
pub fn token_path() -> Result<PathBuf> {
    let base = match std::env::var_os("XDG_CONFIG_HOME").filter(|v| !v.is_empty()) {
        Some(d) => PathBuf::from(d),
        None => PathBuf::from(
            std::env::var_os("HOME")
                .filter(|v| !v.is_empty())
                .ok_or_else(|| {
                    anyhow!("neither XDG_CONFIG_HOME nor HOME is set: set AIRLOCK_TOKEN instead")
                })?,
        )
        .join(".config"),
    };
    Ok(base.join("airlock").join("token"))
}

/// The saved token, if there is one; refuses a file others can read.
pub fn saved_token() -> Result<Option<String>> {
    use std::os::unix::fs::PermissionsExt;
    let path = token_path()?;
    let meta = match std::fs::metadata(&path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        bail!(
            "refusing to use {}: its permissions {mode:o} let others read it; run `chmod 600 {}` or `airlock login` again",
            path.display(),
            path.display()
        );
    }
    if meta.len() > MAX_TOKEN_FILE {
        bail!("{} is larger than {MAX_TOKEN_FILE} bytes: not an airlock token; delete it and run `airlock login`", path.display());
    }
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    let t = text.trim();
    Ok((!t.is_empty()).then(|| t.to_string()))
}

fn save_token(token: &str) -> Result<PathBuf> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
    let path = token_path()?;
    let dir = path.parent().expect("token path has a parent");
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("cannot create {}", dir.display()))?;
    // Write a private temp file, then rename: the token is never world-readable.
    let tmp = dir.join(format!(".token.{}", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    f.write_all(format!("{token}\n").as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, &path).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(path)
}

/// `airlock login`: device flow through the server; returns the login summary.
pub fn login(client: &Client, quiet: bool) -> Result<Value> {
    let start = client.post("/api/v1/auth/device", &json!({}))?;
    let s = |k: &str| {
        start
            .get(k)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    let (device_code, user_code) = (s("device_code"), s("user_code"));
    let uri = start
        .get("verification_uri_complete")
        .and_then(Value::as_str)
        .map(str::to_string)
        .unwrap_or_else(|| s("verification_uri"));
    let mut interval = start
        .get("interval")
        .and_then(Value::as_u64)
        .unwrap_or(5)
        .clamp(1, 60);
    let expires = start
        .get("expires_in")
        .and_then(Value::as_u64)
        .unwrap_or(600)
        .min(3600);
    // The instructions go to stderr so `--output json` keeps stdout clean.
    eprintln!("To log in, open {uri}\nand check that it shows the code {user_code}");
    let deadline = Instant::now() + Duration::from_secs(expires);
    loop {
        if Instant::now() > deadline {
            bail!("the login code expired before it was used: run `airlock login` again");
        }
        let v = client.post(
            "/api/v1/auth/device/token",
            &json!({"device_code": device_code}),
        )?;
        match v.get("status").and_then(Value::as_str) {
            Some("ok") => {
                let token = v
                    .get("token")
                    .and_then(Value::as_str)
                    .ok_or_else(|| anyhow!("the server sent no token"))?;
                let path = save_token(token)?;
                if !quiet {
                    eprintln!();
                }
                let mut out = v.clone();
                if let Some(o) = out.as_object_mut() {
                    o.remove("token");
                    o.remove("status");
                    o.insert("token_file".into(), json!(path.display().to_string()));
                }
                return Ok(out);
            }
            // RFC 8628 §3.5: slow_down adds 5 s for this and every later poll;
            // the server names the new interval, and the CLI never shortens it.
            Some(status @ ("slow_down" | "pending")) => {
                let told = v.get("interval").and_then(Value::as_u64);
                interval = match (status, told) {
                    ("slow_down", None) => interval + 5,
                    (_, Some(t)) => t.max(interval),
                    (_, None) => interval,
                }
                .clamp(1, 60);
            }
            _ => bail!("unexpected answer from the server: {v}"),
        }
        if !quiet {
            eprint!(".");
            let _ = std::io::stderr().flush();
        }
        std::thread::sleep(Duration::from_secs(interval));
    }
}

/// `airlock logout`: revokes the saved token on the server and deletes the file.
pub fn logout(addr: &str) -> Result<Value> {
    let path = token_path()?;
    let Some(token) = saved_token()? else {
        return Ok(
            json!({"revoked": false, "detail": format!("not logged in (no {})", path.display())}),
        );
    };
    let revoked = Client::new(addr, Some(token)).post("/api/v1/auth/logout", &json!({}));
    std::fs::remove_file(&path).with_context(|| format!("cannot delete {}", path.display()))?;
    match revoked {
        Ok(v) => Ok(
            json!({"revoked": true, "user": v.get("user"), "token_file_deleted": path.display().to_string()}),
        ),
        // Already expired or revoked: nothing left to revoke; the file is gone anyway.
        Err(e) if e.to_string().contains("[HTTP 401]") => Ok(json!({
            "revoked": false, "detail": format!("the token was no longer valid ({e}); deleted {}", path.display())
        })),
        Err(e) => Err(e.context(format!(
            "deleted {} but could not revoke the token on the server",
            path.display()
        ))),
    }
}
