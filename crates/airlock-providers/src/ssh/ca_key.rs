//! A private key file of the provider (the CA key, the gateway's host key):
//! read it, or create it once when it is missing.
//! Creation is race-free across replicas that start together: the key is
//! written to a private temp file and hard-linked into place, which fails if
//! the name exists, so exactly one key ever lands and everyone re-reads it.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use rand::rngs::OsRng;
use rand::RngCore;
use ssh_key::{Algorithm, LineEnding, PrivateKey};
use zeroize::Zeroizing;

/// Which key file: what it is for and the config key naming it (for messages).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyRole {
    /// What the key is, as in "the SSH CA key".
    pub what: &'static str,
    /// The section key that names the file.
    pub config_key: &'static str,
}

/// The certificate authority's key (`ca_key`).
pub const CA_KEY: KeyRole = KeyRole {
    what: "SSH CA key",
    config_key: "ca_key",
};

/// The gateway's SSH host key (`gateway_host_key`), what `ssh` clients pin.
pub const GATEWAY_HOST_KEY: KeyRole = KeyRole {
    what: "SSH gateway host key",
    config_key: "gateway_host_key",
};

/// Why a key file cannot be used. Every message names the file and the fix;
/// none echoes key material.
#[derive(Debug, thiserror::Error)]
pub enum CaKeyError {
    /// The file exists but cannot be read.
    #[error("cannot read the {} {path}: {source}; check the path and that airlock may read the file", role.what)]
    Read {
        role: KeyRole,
        path: PathBuf,
        source: io::Error,
    },
    /// The file is not an OpenSSH private key.
    #[error("the {} {path} is not an OpenSSH private key ({reason}); fix it or point `{}` at another file (a new key is generated only when the file does not exist)", role.what, role.config_key)]
    Garbled {
        role: KeyRole,
        path: PathBuf,
        reason: String,
    },
    /// The key is protected by a passphrase airlock cannot know.
    #[error("the {} {path} is encrypted with a passphrase; airlock needs it unencrypted (`ssh-keygen -p -N '' -f {path}`), protected by file permissions (mode 600)", role.what)]
    Encrypted { role: KeyRole, path: PathBuf },
    /// Not an Ed25519 key.
    #[error("the {} {path} is {algorithm}; airlock uses Ed25519 keys only (create one with `ssh-keygen -t ed25519 -N '' -f {path}`)", role.what)]
    Unsupported {
        role: KeyRole,
        path: PathBuf,
        algorithm: String,
    },
    /// The key was missing and could not be created.
    #[error("cannot create the {} {path}: {detail}; create its folder or make one with `ssh-keygen -t ed25519 -N '' -f {path}`", role.what)]
    Create {
        role: KeyRole,
        path: PathBuf,
        detail: String,
    },
}

/// Reads the Ed25519 key at `path`, generating it first if the file does not exist.
pub fn load_or_generate(
    role: KeyRole,
    path: &Path,
    comment: &str,
) -> Result<PrivateKey, CaKeyError> {
    match read(role, path)? {
        Some(bytes) => parse(role, path, &bytes),
        None => {
            generate(role, path, comment)?;
            match read(role, path)? {
                Some(bytes) => parse(role, path, &bytes),
                None => Err(CaKeyError::Create {
                    role,
                    path: path.into(),
                    detail: "the file vanished right after it was created".into(),
                }),
            }
        }
    }
}

/// The file's bytes, `None` when it does not exist.
fn read(role: KeyRole, path: &Path) -> Result<Option<Zeroizing<Vec<u8>>>, CaKeyError> {
    match fs::read(path) {
        Ok(bytes) => {
            warn_if_exposed(role, path);
            Ok(Some(Zeroizing::new(bytes)))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(CaKeyError::Read {
            role,
            path: path.into(),
            source,
        }),
    }
}

fn parse(role: KeyRole, path: &Path, bytes: &[u8]) -> Result<PrivateKey, CaKeyError> {
    let key = PrivateKey::from_openssh(bytes).map_err(|e| CaKeyError::Garbled {
        role,
        path: path.into(),
        reason: e.to_string(),
    })?;
    if key.is_encrypted() {
        return Err(CaKeyError::Encrypted {
            role,
            path: path.into(),
        });
    }
    if key.algorithm() != Algorithm::Ed25519 {
        return Err(CaKeyError::Unsupported {
            role,
            path: path.into(),
            algorithm: key.algorithm().to_string(),
        });
    }
    Ok(key)
}

fn generate(role: KeyRole, path: &Path, comment: &str) -> Result<(), CaKeyError> {
    let fail = |detail: String| CaKeyError::Create {
        role,
        path: path.into(),
        detail,
    };
    let mut key =
        PrivateKey::random(&mut OsRng, Algorithm::Ed25519).map_err(|e| fail(e.to_string()))?;
    key.set_comment(comment);
    let pem = key
        .to_openssh(LineEnding::LF)
        .map_err(|e| fail(e.to_string()))?;

    let file_name = path
        .file_name()
        .ok_or_else(|| fail("the path names no file".into()))?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let tmp = dir.join(format!(
        ".{}.{}.{:016x}.tmp",
        file_name.to_string_lossy(),
        std::process::id(),
        OsRng.next_u64()
    ));
    let written = write_private(&tmp, pem.as_bytes());
    // A hard link, unlike rename, never replaces an existing file: if another
    // replica got there first, its key stays and this one is thrown away.
    let linked = written.and_then(|()| fs::hard_link(&tmp, path));
    let _ = fs::remove_file(&tmp);
    match linked {
        Ok(()) => {
            if let Ok(d) = fs::File::open(&dir) {
                let _ = d.sync_all();
            }
            tracing::info!(path = %path.display(), key = role.what, "generated a new Ed25519 key");
            Ok(())
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(fail(e.to_string())),
    }
}

/// Writes a new file readable by its owner only, flushed to disk.
fn write_private(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut f = options.open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

fn warn_if_exposed(role: KeyRole, path: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(meta) = fs::metadata(path) {
            let mode = meta.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                tracing::warn!(
                    path = %path.display(),
                    mode = format!("{mode:o}"),
                    key = role.what,
                    "the key file is readable by other users; run chmod 600 on it"
                );
            }
        }
    }
}
