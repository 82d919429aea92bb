//! Server key material in the data dir: the Ed25519 key that signs audit
//! checkpoints and the secret from which per-grant passwords are derived
//! (derived, never stored). Generated on first start with mode 0600. The MAC
//! key (CSRF tokens, OIDC state) is derived from that secret under its own
//! label, so no MAC ever uses the grant-derivation key itself.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use ed25519_dalek::{SigningKey, VerifyingKey};
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;

/// File holding the audit signing key (hex of 32 bytes).
pub const SIGNING_KEY_FILE: &str = "audit-signing.key";
/// File holding the public half, for auditors.
pub const PUBLIC_KEY_FILE: &str = "audit-signing.pub";
/// File holding the grant-secret derivation key (hex of 32 bytes).
pub const GRANT_SECRET_FILE: &str = "grant-secret.key";
/// Label under which the MAC key is derived from the grant-secret file's key.
pub const MAC_KEY_LABEL: &[u8] = b"airlock-mac-key-v1";

/// The server's long-lived keys.
#[derive(Clone)]
pub struct ServerKeys {
    /// Signs audit checkpoints.
    pub signing: SigningKey,
    grant_secret: [u8; 32],
    /// HMAC-SHA256(grant key, [`MAC_KEY_LABEL`]): used only by [`ServerKeys::mac`].
    mac_key: [u8; 32],
}

fn hmac(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("any key length");
    for p in parts {
        mac.update(p);
    }
    mac.finalize().into_bytes().into()
}

/// Failure to read or create key files.
#[derive(Debug, thiserror::Error)]
#[error("key file {path}: {why}")]
pub struct KeyError {
    path: PathBuf,
    why: String,
}

fn read_hex32(path: &Path) -> Result<Option<[u8; 32]>, KeyError> {
    match fs::read_to_string(path) {
        Ok(text) => {
            let bytes = hex::decode(text.trim()).map_err(|e| KeyError {
                path: path.into(),
                why: e.to_string(),
            })?;
            let arr: [u8; 32] = bytes.try_into().map_err(|_| KeyError {
                path: path.into(),
                why: "expected 32 bytes of hex".into(),
            })?;
            Ok(Some(arr))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(KeyError {
            path: path.into(),
            why: e.to_string(),
        }),
    }
}

fn write_private(path: &Path, text: &str) -> Result<(), KeyError> {
    let err = |e: std::io::Error| KeyError {
        path: path.into(),
        why: e.to_string(),
    };
    let mut opts = fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(path).map_err(err)?;
    f.write_all(text.as_bytes()).map_err(err)?;
    f.sync_all().map_err(err)
}

fn load_or_create(path: &Path) -> Result<[u8; 32], KeyError> {
    if let Some(k) = read_hex32(path)? {
        return Ok(k);
    }
    let mut k = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut k);
    match write_private(path, &hex::encode(k)) {
        Ok(()) => Ok(k),
        // Another replica sharing the dir won the race: use its key.
        Err(_) if path.exists() => read_hex32(path)?.ok_or(KeyError {
            path: path.into(),
            why: "vanished".into(),
        }),
        Err(e) => Err(e),
    }
}

impl ServerKeys {
    /// Loads the keys from `dir`, creating missing ones (and `dir`).
    pub fn load_or_create(dir: &Path) -> Result<ServerKeys, KeyError> {
        fs::create_dir_all(dir).map_err(|e| KeyError {
            path: dir.into(),
            why: e.to_string(),
        })?;
        let signing = SigningKey::from_bytes(&load_or_create(&dir.join(SIGNING_KEY_FILE))?);
        let grant_secret = load_or_create(&dir.join(GRANT_SECRET_FILE))?;
        let pubfile = dir.join(PUBLIC_KEY_FILE);
        if !pubfile.exists() {
            let _ = fs::write(
                &pubfile,
                format!("{}\n", hex::encode(signing.verifying_key().to_bytes())),
            );
        }
        Ok(ServerKeys::from_parts(signing, grant_secret))
    }

    fn from_parts(signing: SigningKey, grant_secret: [u8; 32]) -> ServerKeys {
        ServerKeys {
            signing,
            mac_key: hmac(&grant_secret, &[MAC_KEY_LABEL]),
            grant_secret,
        }
    }

    /// Reads only the public key (for offline verification): from the public
    /// key file, else from the private key.
    pub fn load_public(dir: &Path) -> Result<Option<VerifyingKey>, KeyError> {
        let pubfile = dir.join(PUBLIC_KEY_FILE);
        let bytes = match read_hex32(&pubfile)? {
            Some(b) => b,
            None => match read_hex32(&dir.join(SIGNING_KEY_FILE))? {
                Some(sk) => SigningKey::from_bytes(&sk).verifying_key().to_bytes(),
                None => return Ok(None),
            },
        };
        VerifyingKey::from_bytes(&bytes)
            .map(Some)
            .map_err(|e| KeyError {
                path: pubfile,
                why: e.to_string(),
            })
    }

    /// The per-grant secret: HMAC-SHA256(grant key, "grant:" || request id
    /// || ":" || salt), where the salt is the request's stored random salt, so
    /// a copy of the key file alone derives no password. Requests made before
    /// salts existed have none and derive as in the first release
    /// (HMAC-SHA256(grant key, "grant:" || request id)): their live grants'
    /// passwords depend on it.
    pub fn grant_secret(&self, request_id: &str, salt: &[u8]) -> [u8; 32] {
        if salt.is_empty() {
            hmac(&self.grant_secret, &[b"grant:", request_id.as_bytes()])
        } else {
            hmac(
                &self.grant_secret,
                &[b"grant:", request_id.as_bytes(), b":", salt],
            )
        }
    }

    /// A keyed MAC for other purposes (`label` keeps them apart: `csrf`,
    /// `oidc-state`, …): HMAC-SHA256(MAC key, label || ":" || data), where the
    /// MAC key is derived from the grant key and never equals it.
    pub fn mac(&self, label: &str, data: &[u8]) -> [u8; 32] {
        hmac(&self.mac_key, &[label.as_bytes(), b":", data])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_persist_and_grant_secrets_are_stable_per_request() {
        let dir = std::env::temp_dir().join(format!("airlock-keys-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let a = ServerKeys::load_or_create(&dir).unwrap();
        let b = ServerKeys::load_or_create(&dir).unwrap();
        assert_eq!(a.signing.to_bytes(), b.signing.to_bytes());
        assert_eq!(a.grant_secret("r1", b"s"), b.grant_secret("r1", b"s"));
        assert_ne!(a.grant_secret("r1", b"s"), a.grant_secret("r2", b"s"));
        assert_ne!(
            a.grant_secret("r1", b"s"),
            a.grant_secret("r1", b"t"),
            "the salt changes the secret"
        );
        assert_ne!(a.grant_secret("r1", b"s"), a.grant_secret("r1", b""));
        assert_eq!(
            ServerKeys::load_public(&dir).unwrap().unwrap(),
            a.signing.verifying_key()
        );
        let _ = fs::remove_dir_all(&dir);
    }

    fn fixed() -> ServerKeys {
        ServerKeys::from_parts(SigningKey::from_bytes(&[7u8; 32]), [42u8; 32])
    }

    #[test]
    fn grant_secrets_derive_exactly_as_before_the_key_split() {
        // HMAC-SHA256(key, "grant:" || id), computed independently of `ServerKeys`.
        let mut want = <Hmac<Sha256> as Mac>::new_from_slice(&[42u8; 32]).unwrap();
        want.update(b"grant:req-1");
        let want: [u8; 32] = want.finalize().into_bytes().into();
        assert_eq!(fixed().grant_secret("req-1", b""), want);
    }

    #[test]
    fn salted_grant_secrets_mix_the_salt_after_the_id() {
        let mut want = <Hmac<Sha256> as Mac>::new_from_slice(&[42u8; 32]).unwrap();
        want.update(b"grant:req-1:\x01\x02");
        let want: [u8; 32] = want.finalize().into_bytes().into();
        assert_eq!(fixed().grant_secret("req-1", &[1, 2]), want);
    }

    #[test]
    fn macs_use_a_derived_key_not_the_grant_key() {
        let k = fixed();
        let old = hmac(&[42u8; 32], &[b"csrf:", b"data"]);
        assert_ne!(k.mac("csrf", b"data"), old, "the grant key must not MAC");
        let mac_key = hmac(&[42u8; 32], &[b"airlock-mac-key-v1"]);
        assert_eq!(k.mac("csrf", b"data"), hmac(&mac_key, &[b"csrf:", b"data"]));
        // A MAC can never be mistaken for a grant secret, even for the label `grant`.
        assert_ne!(k.mac("grant", b"req-1"), k.grant_secret("req-1", b""));
    }
}
