//! C2SP `signed-note` and `tlog-checkpoint` text formats: Ed25519 note
//! signatures with their 4-byte key hash, the `name+hash+base64` verifier key,
//! and the checkpoint body (origin, size, root, extension lines). Notes are
//! user input: parsing bounds their size and names the malformed line.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use ed25519_dalek::{Signature, Signer as _, SigningKey, Verifier as _, VerifyingKey};
use sha2::{Digest, Sha256};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::merkle::Hash;

/// Largest note accepted (a checkpoint is a few hundred bytes).
pub const MAX_NOTE_BYTES: usize = 16 * 1024;
/// Most signature lines read from one note.
const MAX_SIGNATURES: usize = 16;
/// Signature algorithm byte for Ed25519 in key hashes and verifier keys.
const ALG_ED25519: u8 = 1;
/// Extension line carrying the hash-chain head at this size.
const EXT_CHAIN: &str = "airlock-chain ";
/// Extension line carrying `[server] checkpoint_every`.
const EXT_EVERY: &str = "airlock-checkpoint-every ";
/// Extension line carrying the signing time.
const EXT_TIME: &str = "airlock-time ";

/// Why a note, checkpoint or verifier key was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NoteError {
    /// Longer than [`MAX_NOTE_BYTES`].
    #[error("note is {0} bytes, more than the {MAX_NOTE_BYTES} allowed")]
    TooLarge(usize),
    /// Not a signed note (missing blank line, bad signature line, control characters).
    #[error("malformed note: {0}")]
    Malformed(String),
    /// The body is not a tlog checkpoint.
    #[error("malformed checkpoint (line {line}): {why}")]
    Checkpoint { line: usize, why: String },
    /// A verifier key string that does not decode.
    #[error("malformed verifier key: {0} (expected NAME+HASH+BASE64, as printed by `airlock audit pubkey`)")]
    VerifierKey(String),
    /// No signature line by the expected key.
    #[error("not signed by key {expected} (signatures by: {found})")]
    NotSignedBy { expected: String, found: String },
    /// A signature line by the expected key that does not verify.
    #[error("signature by key {0} is invalid (the note was altered)")]
    BadSignature(String),
}

/// C2SP key hash: the first 4 bytes of `SHA-256(name || "\n" || 0x01 || pubkey)`.
pub fn key_hash(name: &str, key: &VerifyingKey) -> u32 {
    let mut h = Sha256::new();
    h.update(name.as_bytes());
    h.update(b"\n");
    h.update([ALG_ED25519]);
    h.update(key.as_bytes());
    let d = h.finalize();
    u32::from_be_bytes([d[0], d[1], d[2], d[3]])
}

/// Whether `name` may name a key: non-empty, no whitespace, no `+`.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty() && !name.chars().any(|c| c.is_whitespace() || c == '+')
}

/// A public key with its note name, as in Go's `note.NewVerifier`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifierKey {
    /// Key name (airlock uses the log origin).
    pub name: String,
    /// The Ed25519 public key.
    pub key: VerifyingKey,
}

impl VerifierKey {
    /// A verifier key; the name must satisfy [`valid_name`].
    pub fn new(name: &str, key: VerifyingKey) -> Result<Self, NoteError> {
        if !valid_name(name) {
            return Err(NoteError::VerifierKey(format!("bad key name `{name}`")));
        }
        Ok(VerifierKey {
            name: name.into(),
            key,
        })
    }

    /// The key hash that signature lines carry.
    pub fn hash(&self) -> u32 {
        key_hash(&self.name, &self.key)
    }

    /// `name+hash+base64(0x01 || pubkey)`.
    pub fn encode(&self) -> String {
        let mut k = vec![ALG_ED25519];
        k.extend_from_slice(self.key.as_bytes());
        format!("{}+{:08x}+{}", self.name, self.hash(), B64.encode(k))
    }

    /// Parses [`encode`](Self::encode)'s form, checking the key hash.
    pub fn parse(s: &str) -> Result<Self, NoteError> {
        let s = s.trim();
        let bad = |why: &str| NoteError::VerifierKey(why.into());
        let mut parts = s.splitn(3, '+');
        let (Some(name), Some(hash), Some(key)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(bad("expected three parts separated by `+`"));
        };
        if !valid_name(name) {
            return Err(bad("bad key name"));
        }
        if hash.len() != 8 {
            return Err(bad("the key hash must be 8 hex digits"));
        }
        let hash = u32::from_str_radix(hash, 16).map_err(|_| bad("the key hash is not hex"))?;
        let key = B64.decode(key).map_err(|_| bad("the key is not base64"))?;
        if key.len() != 33 || key[0] != ALG_ED25519 {
            return Err(bad("not an Ed25519 key"));
        }
        let bytes: [u8; 32] = key[1..].try_into().map_err(|_| bad("key length"))?;
        let key = VerifyingKey::from_bytes(&bytes).map_err(|_| bad("not a valid Ed25519 point"))?;
        let v = VerifierKey::new(name, key)?;
        if v.hash() != hash {
            return Err(bad("the key hash does not match the name and key"));
        }
        Ok(v)
    }
}

/// Signs `text` (which must end in a newline) as a note by `name`.
pub fn sign(text: &str, name: &str, key: &SigningKey) -> Result<String, NoteError> {
    if !text.ends_with('\n') {
        return Err(NoteError::Malformed(
            "note text must end with a newline".into(),
        ));
    }
    if !valid_name(name) {
        return Err(NoteError::Malformed(format!("bad key name `{name}`")));
    }
    let sig = key.sign(text.as_bytes());
    let mut blob = key_hash(name, &key.verifying_key()).to_be_bytes().to_vec();
    blob.extend_from_slice(&sig.to_bytes());
    Ok(format!("{text}\n\u{2014} {name} {}\n", B64.encode(blob)))
}

/// One signature line of a note.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoteSignature {
    /// Key name.
    pub name: String,
    /// Key hash.
    pub hash: u32,
    /// The signature bytes after the key hash.
    pub signature: Vec<u8>,
}

/// A note split into its text and signature lines (nothing verified yet).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    /// The signed text, ending in a newline.
    pub text: String,
    /// Signature lines in order.
    pub signatures: Vec<NoteSignature>,
}

impl Note {
    /// Splits a signed note, bounding its size and rejecting malformed lines.
    pub fn parse(msg: &str) -> Result<Note, NoteError> {
        if msg.len() > MAX_NOTE_BYTES {
            return Err(NoteError::TooLarge(msg.len()));
        }
        if msg.chars().any(|c| c < ' ' && c != '\n') {
            return Err(NoteError::Malformed(
                "control characters (other than newline) are not allowed".into(),
            ));
        }
        let split = msg
            .rfind("\n\n")
            .ok_or_else(|| NoteError::Malformed("no blank line before the signatures".into()))?;
        let (text, sigs) = (&msg[..split + 1], &msg[split + 2..]);
        if sigs.is_empty() || !sigs.ends_with('\n') {
            return Err(NoteError::Malformed(
                "the signature block must end with a newline".into(),
            ));
        }
        let mut signatures = Vec::new();
        for line in sigs.lines() {
            if signatures.len() == MAX_SIGNATURES {
                return Err(NoteError::Malformed(format!(
                    "more than {MAX_SIGNATURES} signatures"
                )));
            }
            let rest = line.strip_prefix("\u{2014} ").ok_or_else(|| {
                NoteError::Malformed(format!(
                    "signature line `{}` must start with `— `",
                    short(line)
                ))
            })?;
            let (name, b64) = rest.split_once(' ').ok_or_else(|| {
                NoteError::Malformed(format!("signature line `{}` has no signature", short(line)))
            })?;
            let blob = B64.decode(b64).map_err(|_| {
                NoteError::Malformed(format!("signature of `{}` is not base64", short(name)))
            })?;
            if !valid_name(name) || blob.len() < 5 {
                return Err(NoteError::Malformed(format!(
                    "signature line `{}` is malformed",
                    short(line)
                )));
            }
            signatures.push(NoteSignature {
                name: name.into(),
                hash: u32::from_be_bytes([blob[0], blob[1], blob[2], blob[3]]),
                signature: blob[4..].to_vec(),
            });
        }
        Ok(Note {
            text: text.into(),
            signatures,
        })
    }

    /// Checks the signature by `key`; fails if it is missing or invalid.
    pub fn verify(&self, key: &VerifierKey) -> Result<(), NoteError> {
        let hash = key.hash();
        let sig = self
            .signatures
            .iter()
            .find(|s| s.name == key.name && s.hash == hash)
            .ok_or_else(|| NoteError::NotSignedBy {
                expected: format!("{}+{hash:08x}", key.name),
                found: self.signers(),
            })?;
        let bytes: [u8; 64] = sig
            .signature
            .as_slice()
            .try_into()
            .map_err(|_| NoteError::BadSignature(format!("{}+{hash:08x}", key.name)))?;
        key.key
            .verify(self.text.as_bytes(), &Signature::from_bytes(&bytes))
            .map_err(|_| NoteError::BadSignature(format!("{}+{hash:08x}", key.name)))
    }

    /// The Ed25519 signature of the first line by `key` (as stored next to the note).
    pub fn signature_by(&self, key: &VerifierKey) -> Option<[u8; 64]> {
        let hash = key.hash();
        self.signatures
            .iter()
            .find(|s| s.name == key.name && s.hash == hash)
            .and_then(|s| s.signature.as_slice().try_into().ok())
    }

    fn signers(&self) -> String {
        if self.signatures.is_empty() {
            return "none".into();
        }
        self.signatures
            .iter()
            .map(|s| format!("{}+{:08x}", s.name, s.hash))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

fn short(s: &str) -> String {
    s.chars().take(40).collect()
}

/// An airlock tree head: the C2SP checkpoint body plus airlock's extension lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TreeHead {
    /// Log origin (`[server] audit_origin`).
    pub origin: String,
    /// Number of events in the tree.
    pub size: u64,
    /// RFC 9162 root hash.
    pub root: Hash,
    /// Hash-chain head (event `size`'s chain hash).
    pub chain: Hash,
    /// `[server] checkpoint_every` in force when signed.
    pub checkpoint_every: u64,
    /// When it was signed.
    pub time: OffsetDateTime,
}

impl TreeHead {
    /// The checkpoint body (what is signed). The time is written in UTC to the
    /// second; one outside UTC years 0000-9999 (which [`parse_text`](Self::parse_text)
    /// refuses) cannot be, and is written as the epoch.
    pub fn to_text(&self) -> String {
        let t = self
            .time
            .checked_to_offset(time::UtcOffset::UTC)
            .and_then(|t| t.replace_nanosecond(0).ok())
            .and_then(|t| t.format(&Rfc3339).ok())
            .unwrap_or_else(|| "1970-01-01T00:00:00Z".into());
        format!(
            "{}\n{}\n{}\n{EXT_CHAIN}{}\n{EXT_EVERY}{}\n{EXT_TIME}{t}\n",
            self.origin,
            self.size,
            B64.encode(self.root),
            B64.encode(self.chain),
            self.checkpoint_every
        )
    }

    /// Signs the body as a note by key `origin`.
    pub fn sign(&self, key: &SigningKey) -> Result<String, NoteError> {
        sign(&self.to_text(), &self.origin, key)
    }

    /// Parses a checkpoint body (a note's text).
    pub fn parse_text(text: &str) -> Result<TreeHead, NoteError> {
        let bad = |line: usize, why: &str| NoteError::Checkpoint {
            line,
            why: why.into(),
        };
        let lines: Vec<&str> = text
            .strip_suffix('\n')
            .ok_or_else(|| bad(0, "text must end with a newline"))?
            .split('\n')
            .collect();
        if lines.len() < 3 {
            return Err(bad(
                lines.len() + 1,
                "expected origin, tree size and root hash",
            ));
        }
        let origin = lines[0];
        if origin.is_empty() {
            return Err(bad(1, "empty origin"));
        }
        let size = lines[1];
        if size.is_empty()
            || !size.bytes().all(|b| b.is_ascii_digit())
            || (size.len() > 1 && size.starts_with('0'))
        {
            return Err(bad(2, "tree size must be a decimal number"));
        }
        let size: u64 = size.parse().map_err(|_| bad(2, "tree size is too large"))?;
        let root =
            hash_b64(lines[2]).ok_or_else(|| bad(3, "root hash must be 32 bytes of base64"))?;
        let (mut chain, mut every, mut time) = (None, None, None);
        for (i, l) in lines.iter().enumerate().skip(3) {
            let n = i + 1;
            if l.is_empty() {
                return Err(bad(n, "empty extension line"));
            }
            if let Some(v) = l.strip_prefix(EXT_CHAIN) {
                chain = Some(
                    hash_b64(v).ok_or_else(|| bad(n, "chain hash must be 32 bytes of base64"))?,
                );
            } else if let Some(v) = l.strip_prefix(EXT_EVERY) {
                every = Some(
                    v.parse::<u64>()
                        .ok()
                        .filter(|e| *e > 0)
                        .ok_or_else(|| bad(n, "checkpoint interval must be a positive number"))?,
                );
            } else if let Some(v) = l.strip_prefix(EXT_TIME) {
                // Only times `to_text` can write back: UTC years 0000-9999.
                time = Some(
                    OffsetDateTime::parse(v, &Rfc3339)
                        .ok()
                        .filter(|t| {
                            t.checked_to_offset(time::UtcOffset::UTC)
                                .is_some_and(|u| (0..=9999).contains(&u.year()))
                        })
                        .ok_or_else(|| bad(n, "time must be RFC 3339 (UTC years 0000-9999)"))?,
                );
            }
            // Other extension lines are someone else's: ignored, as C2SP asks.
        }
        let n = lines.len() + 1;
        Ok(TreeHead {
            origin: origin.into(),
            size,
            root,
            chain: chain
                .ok_or_else(|| bad(n, "no `airlock-chain` line: not an airlock checkpoint"))?,
            checkpoint_every: every.ok_or_else(|| bad(n, "no `airlock-checkpoint-every` line"))?,
            time: time.ok_or_else(|| bad(n, "no `airlock-time` line"))?,
        })
    }

    /// Parses a signed checkpoint and verifies it with `key`.
    pub fn open(msg: &str, key: &VerifierKey) -> Result<TreeHead, NoteError> {
        let note = Note::parse(msg)?;
        note.verify(key)?;
        TreeHead::parse_text(&note.text)
    }
}

fn hash_b64(s: &str) -> Option<Hash> {
    B64.decode(s).ok()?.try_into().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    // Test vectors from golang.org/x/mod/sumdb/note/note_test.go (data, not code).
    const GO_SIGNER: &str =
        "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz";
    const GO_VERIFIER: &str = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW";
    const GO_TEXT: &str = "If you think cryptography is the answer to your problem,\nthen you don't know what your problem is.\n";
    const GO_SIGNED: &str = "If you think cryptography is the answer to your problem,\nthen you don't know what your problem is.\n\n\u{2014} PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n";

    fn go_key() -> SigningKey {
        let b64 = GO_SIGNER.splitn(5, '+').last().unwrap();
        let raw = B64.decode(b64).unwrap();
        assert_eq!(raw[0], 1);
        SigningKey::from_bytes(&raw[1..].try_into().unwrap())
    }

    #[test]
    fn matches_go_note_vectors() {
        let key = go_key();
        let v = VerifierKey::new("PeterNeumann", key.verifying_key()).unwrap();
        assert_eq!(v.hash(), 0xc74f20a3);
        assert_eq!(v.encode(), GO_VERIFIER);
        assert_eq!(VerifierKey::parse(GO_VERIFIER).unwrap(), v);
        assert_eq!(sign(GO_TEXT, "PeterNeumann", &key).unwrap(), GO_SIGNED);
        let n = Note::parse(GO_SIGNED).unwrap();
        assert_eq!(n.text, GO_TEXT);
        n.verify(&v).unwrap();
    }

    #[test]
    fn mangled_verifier_keys_are_refused() {
        for i in 0..GO_VERIFIER.len() {
            let mut b = GO_VERIFIER.as_bytes().to_vec();
            b[i] = b[i].wrapping_add(1);
            if let Ok(s) = String::from_utf8(b) {
                assert!(VerifierKey::parse(&s).is_err(), "{s}");
            }
        }
        assert!(VerifierKey::parse("").is_err());
    }

    fn head() -> TreeHead {
        TreeHead {
            origin: "airlock.example.com/audit".into(),
            size: 12,
            root: [3u8; 32],
            chain: [4u8; 32],
            checkpoint_every: 5,
            time: OffsetDateTime::UNIX_EPOCH,
        }
    }

    #[test]
    fn checkpoints_round_trip_and_verify() {
        let key = go_key();
        let h = head();
        let msg = h.sign(&key).unwrap();
        assert!(msg.starts_with("airlock.example.com/audit\n12\nAwMD"));
        let v = VerifierKey::new(&h.origin, key.verifying_key()).unwrap();
        assert_eq!(TreeHead::open(&msg, &v).unwrap(), h);
        // Any edit of the body breaks the signature.
        let edited = msg.replacen("\n12\n", "\n13\n", 1);
        assert!(matches!(
            TreeHead::open(&edited, &v),
            Err(NoteError::BadSignature(_))
        ));
        // Another key is named in the error.
        let other =
            VerifierKey::new(&h.origin, SigningKey::from_bytes(&[9; 32]).verifying_key()).unwrap();
        assert!(matches!(
            TreeHead::open(&msg, &other),
            Err(NoteError::NotSignedBy { .. })
        ));
    }

    #[test]
    fn malformed_notes_are_refused_with_a_reason() {
        let key = go_key();
        let v = VerifierKey::new("o", key.verifying_key()).unwrap();
        for bad in [
            "",
            "no signatures\n",
            "text\n\nnot a signature\n",
            "text\n\n\u{2014} o !!!\n",
            "text\n\n\u{2014} o AAAA\n",
            "te\u{7}xt\n\n\u{2014} o AAAAAAA=\n",
        ] {
            assert!(TreeHead::open(bad, &v).is_err(), "{bad:?}");
        }
        assert!(matches!(
            Note::parse(&"x".repeat(MAX_NOTE_BYTES + 1)),
            Err(NoteError::TooLarge(_))
        ));
        for body in [
            "o\n",
            "o\n01\nAAAA\n",
            "o\n1\nAAAA\n",
            "\n1\nAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwM=\n",
        ] {
            assert!(TreeHead::parse_text(body).is_err(), "{body:?}");
        }
    }

    #[test]
    fn checkpoint_times_round_trip_in_utc() {
        let body = |t: &str| head().to_text().replace("1970-01-01T00:00:00Z", t);
        // 9999-12-31T23:59:59-23:59 is year 10000 in UTC: it parsed, then
        // `to_text` panicked (`to_offset` out of range); found writing the
        // checkpoint_note fuzz target's round-trip check. Year 0000 at +01:00
        // (year -1 in UTC) parsed and was written back as the epoch.
        for t in ["9999-12-31T23:59:59-23:59", "0000-01-01T00:00:00+01:00"] {
            assert!(
                matches!(
                    TreeHead::parse_text(&body(t)),
                    Err(NoteError::Checkpoint { line: 6, .. })
                ),
                "{t}"
            );
        }
        let mut far = head();
        far.time = time::macros::datetime!(9999-12-31 23:59:59 -23:59);
        assert!(far
            .to_text()
            .contains("airlock-time 1970-01-01T00:00:00Z\n"));
        // In range: written back in UTC, to the second.
        for (t, utc) in [
            ("2026-12-03T10:00:00.5+01:00", "2026-12-03T09:00:00Z"),
            ("9999-12-31T23:59:59Z", "9999-12-31T23:59:59Z"),
            ("0000-01-01T00:00:00-01:00", "0000-01-01T01:00:00Z"),
        ] {
            let h = TreeHead::parse_text(&body(t)).unwrap();
            assert_eq!(h.to_text(), body(utc), "{t}");
        }
    }

    /// The seeds of the `checkpoint_note` fuzz target (fuzz/fuzz_targets/checkpoint_note.rs:
    /// same key, same name; the first byte is the target's mode). Rewrite them with
    /// `AIRLOCK_WRITE_FUZZ_SEEDS=1 cargo test -p airlock-core fuzz_seeds`.
    #[test]
    fn fuzz_seeds_are_signed_checkpoints() {
        use crate::audit_chain::{chain_hash, CheckpointSigner, GENESIS};
        use crate::merkle::Frontier;

        const NAME: &str = "fuzz.example/audit";
        let key = SigningKey::from_bytes(&[0x42; 32]);
        let v = VerifierKey::new(NAME, key.verifying_key()).unwrap();
        // A real head over three events, as the server signs it.
        let (mut chain, mut tree) = (GENESIS, Frontier::new());
        for body in [&b"{\"seq\":1}"[..], b"{\"seq\":2}", b"{\"seq\":3}"] {
            chain = chain_hash(&chain, body);
            tree.push_body(body);
        }
        let signer = CheckpointSigner::new(key.clone(), 1000).with_origin(NAME);
        let at = time::macros::datetime!(2026-12-03 09:00 UTC);
        let checkpoint = signer.sign_head(3, &chain, &tree.root(), at).note.unwrap();
        assert_eq!(TreeHead::open(&checkpoint, &v).unwrap().size, 3);

        // Cosigned by a witness, with another log's extension line and a local time.
        let text = checkpoint.split_once("\n\n").unwrap().0.to_owned() + "\n";
        let text = text.replace("09:00:00Z", "10:00:00.5+01:00") + "witness-ext 1\n";
        let witness = sign(
            &text,
            "witness.example",
            &SigningKey::from_bytes(&[0x44; 32]),
        )
        .unwrap();
        let cosigned = sign(&text, NAME, &key).unwrap() + witness.rsplit_once("\n\n").unwrap().1;
        let head = TreeHead::open(&cosigned, &v).unwrap();
        assert_eq!(head.time, at + time::Duration::milliseconds(500));
        assert_eq!(Note::parse(&cosigned).unwrap().signatures.len(), 2);

        let edited = checkpoint.replacen("\n3\n", "\n4\n", 1);
        assert!(matches!(
            TreeHead::open(&edited, &v),
            Err(NoteError::BadSignature(_))
        ));
        let truncated = &checkpoint[..checkpoint.len() - 10];
        assert!(matches!(
            Note::parse(truncated),
            Err(NoteError::Malformed(_))
        ));

        // Mode 3: kind 1 (a genuine proof), a = 299 (300 leaves), b = 99, then edits.
        let mut proof = vec![1u8];
        proof.extend_from_slice(&299u64.to_be_bytes());
        proof.extend_from_slice(&99u64.to_be_bytes());
        proof.extend_from_slice(&[0, 7, 5, 40, 3, 1]);

        let seeds: [(&str, Vec<u8>); 6] = [
            ("checkpoint", [b"\0", checkpoint.as_bytes()].concat()),
            ("cosigned", [b"\0", cosigned.as_bytes()].concat()),
            ("bad-signature", [b"\0", edited.as_bytes()].concat()),
            ("truncated", [b"\0", truncated.as_bytes()].concat()),
            ("verifier-key", [b"\x02", v.encode().as_bytes()].concat()),
            ("proof", proof),
        ];
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../fuzz/seeds/checkpoint_note");
        let write = std::env::var_os("AIRLOCK_WRITE_FUZZ_SEEDS").is_some();
        for (name, bytes) in seeds {
            let path = dir.join(name);
            if write {
                std::fs::create_dir_all(&dir).unwrap();
                std::fs::write(&path, &bytes).unwrap();
            }
            let on_disk = std::fs::read(&path).unwrap_or_else(|e| {
                panic!(
                    "{}: {e} (AIRLOCK_WRITE_FUZZ_SEEDS=1 writes it)",
                    path.display()
                )
            });
            assert!(
                on_disk == bytes,
                "{} is stale (AIRLOCK_WRITE_FUZZ_SEEDS=1 rewrites it)",
                path.display()
            );
        }
    }
}
