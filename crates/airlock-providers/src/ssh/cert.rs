//! Certifying a user's public key: which keys are accepted, and the exact
//! contents of the certificate. Pure: the caller passes the time and the CA key.

use ssh_key::certificate::{Builder, CertType};
use ssh_key::public::KeyData;
use ssh_key::{Certificate, PrivateKey, PublicKey};

/// How far before "now" a certificate becomes valid, so a target whose clock
/// runs a little behind ours still accepts it at once (OpenSSH has no skew
/// tolerance of its own). The end of validity is never moved.
pub const CLOCK_SKEW_SECS: u64 = 60;
/// Smallest RSA modulus accepted (OpenSSH's own minimum since 9.x is 1024; we ask more).
pub const MIN_RSA_BITS: usize = 2048;
/// Longest public key line accepted (an RSA 16384-bit key is about 2.8 KiB).
const MAX_LINE: usize = 16 * 1024;

/// Why a public key cannot be certified; the message tells the requester what to send.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyRefusal {
    /// No key was sent.
    #[error("a public key is required: send the OpenSSH public key to certify (e.g. `airlock credentials ID --public-key ~/.ssh/id_ed25519.pub`)")]
    Missing,
    /// More than one line, or absurdly long.
    #[error(
        "the public key must be one OpenSSH public key line, like `ssh-ed25519 AAAA... comment`"
    )]
    NotOneLine,
    /// A private key was sent (never echoed back).
    #[error("that is a private key; send the matching .pub file instead (a private key never needs to leave your machine)")]
    PrivateKey,
    /// A certificate was sent instead of the key it certifies.
    #[error(
        "that is a certificate ({0}); send the plain public key (the .pub file, not -cert.pub)"
    )]
    Certificate(String),
    /// Not parseable as an OpenSSH public key.
    #[error("the public key is not a valid OpenSSH public key line ({0})")]
    Unparsable(String),
    /// The CA's own key.
    #[error("the public key is this certificate authority's own key; send a user key")]
    CaKey,
    /// DSA: weak, and dropped by current OpenSSH.
    #[error("DSA keys are not accepted (weak, and disabled in current OpenSSH); use an ed25519 key (`ssh-keygen -t ed25519`)")]
    Dsa,
    /// RSA below [`MIN_RSA_BITS`].
    #[error("the RSA key has {0} bits; at least 2048 are required (an ed25519 key is recommended: `ssh-keygen -t ed25519`)")]
    WeakRsa(usize),
    /// An algorithm airlock does not certify.
    #[error("key type `{0}` is not supported; use ed25519, ecdsa-sha2-nistp256/384/521, rsa (2048 bits or more) or a security key (sk-ssh-ed25519, sk-ecdsa-sha2-nistp256)")]
    Unsupported(String),
}

/// Parses and vets the key to certify.
pub fn parse_user_key(text: Option<&str>, ca: &PublicKey) -> Result<PublicKey, KeyRefusal> {
    let text = text.map(str::trim).filter(|t| !t.is_empty());
    let line = text.ok_or(KeyRefusal::Missing)?;
    if line.contains("PRIVATE KEY") {
        return Err(KeyRefusal::PrivateKey);
    }
    if line.len() > MAX_LINE || line.contains(['\n', '\r']) {
        return Err(KeyRefusal::NotOneLine);
    }
    let algorithm = line.split_ascii_whitespace().next().unwrap_or_default();
    if algorithm.ends_with("-cert-v01@openssh.com") {
        return Err(KeyRefusal::Certificate(algorithm.into()));
    }
    let key = PublicKey::from_openssh(line).map_err(|e| KeyRefusal::Unparsable(e.to_string()))?;
    match key.key_data() {
        KeyData::Ed25519(_)
        | KeyData::Ecdsa(_)
        | KeyData::SkEd25519(_)
        | KeyData::SkEcdsaSha2NistP256(_) => {}
        KeyData::Rsa(rsa) => {
            let bits = rsa.n.as_positive_bytes().map_or(0, bit_length);
            if bits < MIN_RSA_BITS {
                return Err(KeyRefusal::WeakRsa(bits));
            }
        }
        KeyData::Dsa(_) => return Err(KeyRefusal::Dsa),
        other => return Err(KeyRefusal::Unsupported(other.algorithm().to_string())),
    }
    if key.key_data() == ca.key_data() {
        return Err(KeyRefusal::CaKey);
    }
    Ok(key)
}

/// Bits in a big-endian unsigned integer without leading zero bytes.
fn bit_length(bytes: &[u8]) -> usize {
    match bytes.first() {
        Some(&top) => bytes.len() * 8 - top.leading_zeros() as usize,
        None => 0,
    }
}

/// Everything a certificate says besides the key it certifies.
#[derive(Debug, Clone)]
pub struct CertContents<'a> {
    /// Names the user and the request (`airlock:USER:REQUEST`).
    pub key_id: String,
    /// Unique per certificate; what the KRL revokes.
    pub serial: u64,
    /// Remote login names the certificate is good for.
    pub principals: &'a [String],
    /// Extensions, all with an empty value (duplicates collapse).
    pub extensions: &'a [String],
    /// `source-address` critical option.
    pub source_address: Option<&'a str>,
    /// `force-command` critical option.
    pub force_command: Option<&'a str>,
    /// First valid second (unix time).
    pub valid_after: u64,
    /// First second no longer valid (unix time): the grant's `not_after`.
    pub valid_before: u64,
}

/// Signs a user certificate for `key` with the CA key.
pub fn sign(
    ca: &PrivateKey,
    key: &PublicKey,
    c: &CertContents<'_>,
) -> Result<Certificate, ssh_key::Error> {
    let mut b = Builder::new_with_random_nonce(
        &mut rand::rngs::OsRng,
        key.key_data().clone(),
        c.valid_after,
        c.valid_before,
    )?;
    b.cert_type(CertType::User)?;
    b.serial(c.serial)?;
    b.key_id(c.key_id.clone())?;
    for p in c.principals {
        b.valid_principal(p.clone())?;
    }
    let mut extensions: Vec<&String> = c.extensions.iter().collect();
    extensions.sort();
    extensions.dedup();
    for x in extensions {
        b.extension(x.clone(), "")?;
    }
    if let Some(cmd) = c.force_command {
        b.critical_option("force-command", cmd)?;
    }
    if let Some(addr) = c.source_address {
        b.critical_option("source-address", addr)?;
    }
    b.comment(key.comment())?;
    b.sign(ca)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ssh_key::public::{DsaPublicKey, RsaPublicKey};
    use ssh_key::{Algorithm, HashAlg, LineEnding, Mpint};

    fn ed25519() -> PrivateKey {
        PrivateKey::random(&mut rand::rngs::OsRng, Algorithm::Ed25519).unwrap()
    }

    fn line(key: KeyData) -> String {
        PublicKey::new(key, "someone@laptop").to_openssh().unwrap()
    }

    fn rsa_with_bits(bits: usize) -> String {
        let mut n = vec![0xffu8; bits / 8];
        n[0] = 0x80;
        line(KeyData::Rsa(RsaPublicKey {
            e: Mpint::from_positive_bytes(&[1, 0, 1]).unwrap(),
            n: Mpint::from_positive_bytes(&n).unwrap(),
        }))
    }

    #[test]
    fn accepts_ed25519_and_rsa_of_2048_bits() {
        let ca = ed25519();
        let user = ed25519();
        let line = user.public_key().to_openssh().unwrap();
        let parsed = parse_user_key(Some(&format!("  {line}\n")), ca.public_key()).unwrap();
        assert_eq!(parsed.key_data(), user.public_key().key_data());
        assert!(parse_user_key(Some(&rsa_with_bits(2048)), ca.public_key()).is_ok());
    }

    #[test]
    fn refuses_what_must_not_be_certified() {
        let ca = ed25519();
        let user = ed25519();
        let pk = |t: &str| parse_user_key(Some(t), ca.public_key());
        assert_eq!(
            parse_user_key(None, ca.public_key()),
            Err(KeyRefusal::Missing)
        );
        assert_eq!(pk("  \n"), Err(KeyRefusal::Missing));
        assert_eq!(pk(&rsa_with_bits(1024)), Err(KeyRefusal::WeakRsa(1024)));
        assert_eq!(pk(&rsa_with_bits(2040)), Err(KeyRefusal::WeakRsa(2040)));
        let one = Mpint::from_positive_bytes(&[3; 128]).unwrap();
        let dsa = line(KeyData::Dsa(DsaPublicKey {
            p: one.clone(),
            q: Mpint::from_positive_bytes(&[3; 20]).unwrap(),
            g: one.clone(),
            y: one,
        }));
        assert_eq!(pk(&dsa), Err(KeyRefusal::Dsa));
        assert_eq!(
            pk(&ca.public_key().to_openssh().unwrap()),
            Err(KeyRefusal::CaKey)
        );
        let private = user.to_openssh(LineEnding::LF).unwrap();
        let refused = pk(&private).unwrap_err();
        assert_eq!(refused, KeyRefusal::PrivateKey);
        assert!(
            !refused.to_string().contains("AAAA"),
            "never echoes the key"
        );
        let two = format!(
            "{}\n{}",
            user.public_key().to_openssh().unwrap(),
            ed25519().public_key().to_openssh().unwrap()
        );
        assert_eq!(pk(&two), Err(KeyRefusal::NotOneLine));
        assert!(matches!(
            pk("ssh-ed25519 not-base64"),
            Err(KeyRefusal::Unparsable(_))
        ));
        assert!(matches!(pk("hello"), Err(KeyRefusal::Unparsable(_))));
    }

    #[test]
    fn refuses_a_certificate_in_place_of_a_key() {
        let ca = ed25519();
        let user = ed25519();
        let cert = sign(&ca, user.public_key(), &contents(&["deploy".into()], &[])).unwrap();
        let refused = parse_user_key(Some(&cert.to_openssh().unwrap()), ca.public_key());
        assert_eq!(
            refused,
            Err(KeyRefusal::Certificate(
                "ssh-ed25519-cert-v01@openssh.com".into()
            ))
        );
    }

    fn contents<'a>(principals: &'a [String], extensions: &'a [String]) -> CertContents<'a> {
        CertContents {
            key_id: "airlock:alice:req1".into(),
            serial: 42,
            principals,
            extensions,
            source_address: None,
            force_command: None,
            valid_after: 1_700_000_000 - CLOCK_SKEW_SECS,
            valid_before: 1_700_003_600,
        }
    }

    #[test]
    fn certificate_says_exactly_what_the_grant_says() {
        let ca = ed25519();
        let user = ed25519();
        let principals = vec!["deploy".to_string(), "web".to_string()];
        let extensions = vec![
            "permit-pty".to_string(),
            "permit-agent-forwarding".to_string(),
            "permit-pty".to_string(),
        ];
        let mut c = contents(&principals, &extensions);
        c.source_address = Some("10.0.0.0/8,127.0.0.1");
        c.force_command = Some("/usr/bin/deploy --check");
        let cert = sign(&ca, user.public_key(), &c).unwrap();
        let cert = Certificate::from_openssh(&cert.to_openssh().unwrap()).unwrap();

        assert_eq!(cert.cert_type(), CertType::User);
        assert_eq!(cert.key_id(), "airlock:alice:req1");
        assert_eq!(cert.serial(), 42);
        assert_eq!(cert.valid_principals(), &principals[..]);
        assert_eq!(cert.valid_after(), 1_700_000_000 - 60);
        assert_eq!(cert.valid_before(), 1_700_003_600);
        assert_eq!(cert.public_key(), user.public_key().key_data());
        let ext: Vec<(&str, &str)> = cert
            .extensions()
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert_eq!(
            ext,
            vec![("permit-agent-forwarding", ""), ("permit-pty", "")]
        );
        let crit: Vec<(&str, &str)> = cert
            .critical_options()
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert_eq!(
            crit,
            vec![
                ("force-command", "/usr/bin/deploy --check"),
                ("source-address", "10.0.0.0/8,127.0.0.1")
            ]
        );
        let ca_fp = ca.public_key().fingerprint(HashAlg::Sha256);
        cert.validate_at(1_700_000_000, [&ca_fp]).unwrap();
        assert!(
            cert.validate_at(1_700_003_600, [&ca_fp]).is_err(),
            "invalid from not_after on"
        );
    }

    #[test]
    fn no_extensions_means_none() {
        let ca = ed25519();
        let user = ed25519();
        let principals = vec!["deploy".to_string()];
        let cert = sign(&ca, user.public_key(), &contents(&principals, &[])).unwrap();
        assert!(cert.extensions().is_empty());
        assert!(cert.critical_options().is_empty());
    }

    #[test]
    fn bit_length_counts_from_the_top_bit() {
        assert_eq!(bit_length(&[]), 0);
        assert_eq!(bit_length(&[1]), 1);
        assert_eq!(bit_length(&[0x80, 0]), 16);
        assert_eq!(bit_length(&[0x7f, 0]), 15);
    }
}
