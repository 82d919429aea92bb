//! The CA's private key file: read it, or create it once when it is missing.
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

/// Why the CA key cannot be used. Every message names the file and the fix;
/// none echoes key material.
#[derive(Debug, thiserror::Error)]
pub enum CaKeyError {
    /// The file exists but cannot be read.
    #[error("cannot read the SSH CA key {path}: {source}; check the path and that airlock may read the file")]
    Read { path: PathBuf, source: io::Error },
    /// The file is not an OpenSSH private key.
    #[error("the SSH CA key {path} is not an OpenSSH private key ({reason}); fix it or point `ca_key` at another file (a new key is generated only when the file does not exist)")]
    Garbled { path: PathBuf, reason: String },
    /// The key is protected by a passphrase airlock cannot know.
    #[error("the SSH CA key {path} is encrypted with a passphrase; airlock needs it unencrypted (`ssh-keygen -p -N '' -f {path}`), protected by file permissions (mode 600)")]
    Encrypted { path: PathBuf },
    /// Not an Ed25519 key.
    #[error("the SSH CA key {path} is {algorithm}; airlock signs with Ed25519 CA keys only (create one with `ssh-keygen -t ed25519 -N '' -f {path}`)")]
    Unsupported { path: PathBuf, algorithm: String },
    /// The key was missing and could not be created.
    #[error("cannot create the SSH CA key {path}: {detail}; create its folder or make one with `ssh-keygen -t ed25519 -N '' -f {path}`")]
    Create { path: PathBuf, detail: String },
}

/// Reads the Ed25519 CA key at `path`, generating it first if the file does not exist.
pub fn load_or_generate(path: &Path, comment: &str) -> Result<PrivateKey, CaKeyError> {
    match read(path)? {
        Some(bytes) => parse(path, &bytes),
        None => {
            generate(path, comment)?;
            match read(path)? {
                Some(bytes) => parse(path, &bytes),
                None => Err(CaKeyError::Create {
                    path: path.into(),
                    detail: "the file vanished right after it was created".into(),
                }),
            }
        }
    }
}

/// The file's bytes, `None` when it does not exist.
fn read(path: &Path) -> Result<Option<Zeroizing<Vec<u8>>>, CaKeyError> {
    match fs::read(path) {
        Ok(bytes) => {
            warn_if_exposed(path);
            Ok(Some(Zeroizing::new(bytes)))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(CaKeyError::Read {
            path: path.into(),
            source,
        }),
    }
}

fn parse(path: &Path, bytes: &[u8]) -> Result<PrivateKey, CaKeyError> {
    let key = PrivateKey::from_openssh(bytes).map_err(|e| CaKeyError::Garbled {
        path: path.into(),
        reason: e.to_string(),
    })?;
    if key.is_encrypted() {
        return Err(CaKeyError::Encrypted { path: path.into() });
    }
    if key.algorithm() != Algorithm::Ed25519 {
        return Err(CaKeyError::Unsupported {
            path: path.into(),
            algorithm: key.algorithm().to_string(),
        });
    }
    Ok(key)
}

fn generate(path: &Path, comment: &str) -> Result<(), CaKeyError> {
    let fail = |detail: String| CaKeyError::Create {
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
            tracing::info!(path = %path.display(), "generated a new Ed25519 SSH CA key");
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

fn warn_if_exposed(path: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(meta) = fs::metadata(path) {
            let mode = meta.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                tracing::warn!(
                    path = %path.display(),
                    mode = format!("{mode:o}"),
                    "the SSH CA key is readable by other users; run chmod 600 on it"
                );
            }
        }
    }
}
