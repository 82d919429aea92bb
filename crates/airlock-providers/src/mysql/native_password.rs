//! Grant passwords: derived from the per-grant secret and handed to MariaDB
//! only as the `mysql_native_password` hash computed here, so the plaintext
//! never appears in SQL text, the processlist, the binary log or server logs.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use sha1::{Digest, Sha1};

/// The login password for a grant: URL-safe base64 of its secret (43 chars),
/// so it can be re-derived for `credentials` and needs no escaping anywhere.
pub fn password(secret: &[u8; 32]) -> String {
    URL_SAFE_NO_PAD.encode(secret)
}

/// What MariaDB stores for `password(secret)`: `*` + upper-case hex of
/// SHA1(SHA1(password)), the value of `PASSWORD(...)`. The SHA-1 construction
/// is weak only for guessable passwords; these carry 256 random bits.
pub fn hash(secret: &[u8; 32]) -> String {
    hash_of(password(secret).as_bytes())
}

/// `mysql_native_password` hash of any password.
pub fn hash_of(password: &[u8]) -> String {
    let twice = Sha1::digest(Sha1::digest(password));
    let mut out = String::with_capacity(41);
    out.push('*');
    for b in twice {
        out.push_str(&format!("{b:02X}"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_matches_the_servers_password_function() {
        // SELECT PASSWORD('pw') on MariaDB 10.11.
        assert_eq!(hash_of(b"pw"), "*D821809F681A40A6E379B50D0463EFAE20BDD122");
    }

    #[test]
    fn password_and_hash_are_deterministic_and_depend_on_the_secret() {
        let a = password(&[0xfb; 32]);
        assert_eq!(a, password(&[0xfb; 32]));
        assert_ne!(a, password(&[0xfa; 32]));
        assert_eq!(a.len(), 43);
        assert!(a
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
        let h = hash(&[1; 32]);
        assert_eq!(h, hash(&[1; 32]));
        assert_ne!(h, hash(&[2; 32]));
        assert_eq!(h.len(), 41);
        assert!(!h.contains(&password(&[1; 32])));
    }
}
