//! Grant passwords: derived from the per-grant secret, and stored on the server
//! only as a SCRAM-SHA-256 verifier computed here, so the plaintext never
//! appears in SQL text, server logs or `pg_stat_activity`.

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

/// PBKDF2 rounds in the verifier. Key stretching protects guessable human
/// passwords; these are 256 random bits, so it buys nothing and would cost
/// ~1 ms per grant at PostgreSQL's default of 4096. Still > 1 for clients
/// that distrust a single round.
pub const ITERATIONS: u32 = 64;

/// The login password for a grant: URL-safe base64 of its secret (43 chars),
/// so the server can re-derive it and it needs no escaping in a URL.
pub fn password(secret: &[u8; 32]) -> String {
    URL_SAFE_NO_PAD.encode(secret)
}

/// The verifier PostgreSQL stores for `password(secret)`; deterministic (the
/// salt comes from the secret), so a retried apply sets the same value.
pub fn verifier(secret: &[u8; 32]) -> String {
    let digest = Sha256::new()
        .chain_update(b"airlock scram salt\0")
        .chain_update(secret)
        .finalize();
    let mut salt = [0u8; 16];
    salt.copy_from_slice(&digest[..16]);
    verifier_with(password(secret).as_bytes(), &salt, ITERATIONS)
}

/// RFC 5802/7677 `SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>`.
/// The password must need no SASLprep (ASCII without controls, as ours is).
pub fn verifier_with(password: &[u8], salt: &[u8], iterations: u32) -> String {
    let mac = |key: &[u8], parts: &[&[u8]]| -> [u8; 32] {
        let mut m = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes any key length");
        for p in parts {
            m.update(p);
        }
        m.finalize().into_bytes().into()
    };
    let mut u = mac(password, &[salt, &1u32.to_be_bytes()]);
    let mut salted = u;
    for _ in 1..iterations {
        u = mac(password, &[&u]);
        salted.iter_mut().zip(u).for_each(|(s, b)| *s ^= b);
    }
    let stored_key = Sha256::digest(mac(&salted, &[b"Client Key"]));
    let server_key = mac(&salted, &[b"Server Key"]);
    format!(
        "SCRAM-SHA-256${iterations}:{}${}:{}",
        STANDARD.encode(salt),
        STANDARD.encode(stored_key),
        STANDARD.encode(server_key)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verifier_matches_the_reference_implementation() {
        let reference = postgres_protocol::password::scram_sha_256(b"pencil-Xy_9");
        // SCRAM-SHA-256$4096:<salt>$<StoredKey>:<ServerKey>
        let salt_b64 = reference
            .split('$')
            .nth(1)
            .unwrap()
            .split(':')
            .nth(1)
            .unwrap();
        let salt = STANDARD.decode(salt_b64).unwrap();
        assert_eq!(verifier_with(b"pencil-Xy_9", &salt, 4096), reference);
    }

    #[test]
    fn password_and_verifier_are_deterministic_and_depend_on_the_secret() {
        let a = password(&[0xfb; 32]);
        assert_eq!(a, password(&[0xfb; 32]));
        assert_ne!(a, password(&[0xfa; 32]));
        assert_eq!(a.len(), 43);
        assert!(
            a.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
            "{a}"
        );
        assert_eq!(verifier(&[1; 32]), verifier(&[1; 32]));
        assert_ne!(verifier(&[1; 32]), verifier(&[2; 32]));
        assert!(!verifier(&[1; 32]).contains(&password(&[1; 32])));
    }
}
