//! C2SP signed notes and tlog checkpoints (`airlock_core::note`) and the
//! RFC 9162 proof verifiers (`airlock_core::merkle`) that `audit verify
//! --since` and `audit prove` feed with a server's answers. The first byte
//! picks a mode: 0 an arbitrary note, parsed and verified with a fixed Ed25519
//! key, its body parsed as a checkpoint and re-signed; 1 an arbitrary body
//! that the target signs (so the parser sees arbitrary text behind a valid
//! signature); 2 an arbitrary verifier key string against a fixed signed
//! checkpoint; 3 proofs: `kind, a[8], b[8], rest`, with arbitrary sizes and
//! hashes (even kind) or a genuine proof over a tree of up to 300 leaves
//! edited by `rest` (odd kind), which must verify exactly when unedited.
#![no_main]

use std::sync::OnceLock;

use airlock_core::merkle::{self, Frontier, Hash};
use airlock_core::note::{self, Note, NoteError, TreeHead, VerifierKey, MAX_NOTE_BYTES};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use ed25519_dalek::SigningKey;
use libfuzzer_sys::fuzz_target;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// Key name of the fixed key: the log origin, as airlock names its key.
/// The seeds in fuzz/seeds/checkpoint_note are signed by this key (see
/// `fuzz_seeds_are_signed_checkpoints` in crates/airlock-core/src/note.rs).
const NAME: &str = "fuzz.example/audit";
const SEED: [u8; 32] = [0x42; 32];
/// Largest tree the genuine-proof mode builds.
const MAX_LEAVES: u64 = 300;

struct Fixture {
    signing: SigningKey,
    verifier: VerifierKey,
    /// Another key under the same name.
    other: VerifierKey,
    /// A checkpoint signed by `signing`.
    checkpoint: String,
    /// Leaf hashes of the genuine tree, and `roots[n]` = root of its first n leaves.
    leaves: Vec<Hash>,
    roots: Vec<Hash>,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let signing = SigningKey::from_bytes(&SEED);
        let verifier = VerifierKey::new(NAME, signing.verifying_key()).expect("valid name");
        let other = VerifierKey::new(NAME, SigningKey::from_bytes(&[0x43; 32]).verifying_key())
            .expect("valid name");
        let checkpoint = TreeHead {
            origin: NAME.into(),
            size: 3,
            root: [1; 32],
            chain: [2; 32],
            checkpoint_every: 1,
            time: OffsetDateTime::parse("2026-12-03T00:00:00Z", &Rfc3339).expect("RFC 3339"),
        }
        .sign(&signing)
        .expect("sign");
        let leaves: Vec<Hash> = (0..MAX_LEAVES)
            .map(|i| merkle::leaf_hash(&i.to_be_bytes()))
            .collect();
        let mut f = Frontier::new();
        let mut roots = vec![f.root()];
        for l in &leaves {
            f.push(*l);
            roots.push(f.root());
        }
        Fixture {
            signing,
            verifier,
            other,
            checkpoint,
            leaves,
            roots,
        }
    })
}

/// The note's bytes as `Note::parse` must have read them.
fn serialise(n: &Note) -> String {
    let mut s = n.text.clone();
    s.push('\n');
    for sig in &n.signatures {
        let mut blob = sig.hash.to_be_bytes().to_vec();
        blob.extend_from_slice(&sig.signature);
        s.push_str(&format!("\u{2014} {} {}\n", sig.name, B64.encode(blob)));
    }
    s
}

/// Mode 0: an arbitrary note.
fn arbitrary_note(s: &str) {
    let f = fixture();
    let opened = TreeHead::open(s, &f.verifier);
    let note = match Note::parse(s) {
        Ok(n) => n,
        Err(e) => {
            assert!(opened.is_err(), "open accepted what parse refused ({e})");
            return;
        }
    };
    assert!(s.len() <= MAX_NOTE_BYTES);
    assert!(note.text.ends_with('\n'));
    assert!(!note.signatures.is_empty() && note.signatures.len() <= 16);
    assert!(note.signatures.iter().all(|s| note::valid_name(&s.name)));
    assert_eq!(
        serialise(&note),
        s,
        "a parsed note re-serialises to its own bytes"
    );
    match note.verify(&f.verifier) {
        Ok(()) => {
            // Ed25519 is deterministic: the only signature of this text by the
            // fixed key that can verify is the one `sign` makes.
            let sig = note
                .signature_by(&f.verifier)
                .expect("a verified note holds the signature");
            let again = note::sign(&note.text, NAME, &f.signing).expect("the text signs");
            let again = Note::parse(&again).expect("a signed note parses");
            assert_eq!(again.signatures[0].signature, sig);
            if note.signatures.len() == 1 {
                assert_eq!(serialise(&again), s);
            }
            assert_eq!(opened, TreeHead::parse_text(&note.text));
        }
        Err(e) => {
            assert!(
                matches!(
                    e,
                    NoteError::NotSignedBy { .. } | NoteError::BadSignature(_)
                ),
                "verify failed with {e:?}"
            );
            assert!(opened.is_err(), "open accepted a note that does not verify");
        }
    }
    if let Ok(h) = TreeHead::parse_text(&note.text) {
        head(&h);
    }
    // The (mutated) body as a properly signed note.
    signed_body(&note.text);
}

/// Mode 1 (and the rest of mode 0): `text` signed by the fixed key.
fn signed_body(text: &str) {
    let f = fixture();
    let msg = note::sign(text, NAME, &f.signing);
    if !text.ends_with('\n') {
        assert!(msg.is_err(), "signed a text without a final newline");
        return;
    }
    let msg = msg.expect("a text ending in a newline signs");
    assert!(msg.starts_with(text));
    let clean = msg.len() <= MAX_NOTE_BYTES && !text.chars().any(|c| c < ' ' && c != '\n');
    let note = match Note::parse(&msg) {
        Ok(n) => n,
        Err(e) => {
            assert!(!clean, "a signed note of clean text was refused: {e}");
            return;
        }
    };
    assert!(
        clean,
        "a note with control characters or too long was accepted"
    );
    assert_eq!(note.text, text);
    assert_eq!(note.signatures.len(), 1);
    assert_eq!(serialise(&note), msg);
    note.verify(&f.verifier)
        .expect("a note signed by the key verifies");
    assert!(matches!(
        note.verify(&f.other),
        Err(NoteError::NotSignedBy { .. })
    ));
    let altered = Note {
        text: format!("{text}.\n"),
        signatures: note.signatures.clone(),
    };
    assert!(matches!(
        altered.verify(&f.verifier),
        Err(NoteError::BadSignature(_))
    ));
    let body = TreeHead::parse_text(text);
    assert_eq!(TreeHead::open(&msg, &f.verifier), body);
    if let Ok(h) = body {
        head(&h);
    }
}

/// A parsed tree head: its text parses back to it, and its own signature opens.
fn head(h: &TreeHead) {
    let text = h.to_text();
    let back = TreeHead::parse_text(&text).expect("to_text parses");
    assert_eq!(
        (
            &back.origin,
            back.size,
            back.root,
            back.chain,
            back.checkpoint_every
        ),
        (&h.origin, h.size, h.root, h.chain, h.checkpoint_every)
    );
    // The time is written in UTC to the second.
    assert_eq!(back.time, h.time.replace_nanosecond(0).expect("0 ns"));
    if note::valid_name(&h.origin) {
        let f = fixture();
        let key = VerifierKey::new(&h.origin, f.signing.verifying_key()).expect("valid name");
        let msg = h.sign(&f.signing).expect("signs");
        assert_eq!(TreeHead::open(&msg, &key), Ok(back));
    }
}

/// Mode 2: a verifier key string.
fn verifier_key(s: &str) {
    let f = fixture();
    let Ok(v) = VerifierKey::parse(s) else {
        assert_ne!(s.trim(), f.verifier.encode(), "the fixed key was refused");
        return;
    };
    assert_eq!(VerifierKey::parse(&v.encode()).as_ref(), Ok(&v));
    // Canonical but for the hash's letter case.
    let parts: Vec<&str> = s.trim().splitn(3, '+').collect();
    assert_eq!(
        v.encode(),
        format!(
            "{}+{}+{}",
            parts[0],
            parts[1].to_ascii_lowercase(),
            parts[2]
        )
    );
    assert_eq!(
        TreeHead::open(&f.checkpoint, &v).is_ok(),
        v == f.verifier,
        "the checkpoint opened with another key"
    );
}

fn take_u64(data: &mut &[u8]) -> Option<u64> {
    let (head, tail) = data.split_first_chunk::<8>()?;
    *data = tail;
    Some(u64::from_be_bytes(*head))
}

/// Mode 3: proofs.
fn proofs(data: &[u8]) {
    let Some((&kind, mut data)) = data.split_first() else {
        return;
    };
    let (Some(a), Some(b)) = (take_u64(&mut data), take_u64(&mut data)) else {
        return;
    };
    if kind & 1 == 0 {
        // Arbitrary sizes and hashes: never a panic.
        let h: Vec<Hash> = data
            .chunks_exact(32)
            .take(merkle::MAX_PROOF_LEN + 3)
            .map(|c| c.try_into().expect("32 bytes"))
            .collect();
        let (x, y, proof) = match h.as_slice() {
            [x, y, rest @ ..] => (*x, *y, rest),
            _ => ([0; 32], [0; 32], &[][..]),
        };
        let _ = merkle::verify_inclusion(a, b, &x, proof, &y);
        let _ = merkle::verify_consistency(a, b, &x, &y, proof);
        let _ = merkle::verify_consistency(a, a, &x, &x, proof);
        return;
    }
    let f = fixture();
    let n = 1 + a % MAX_LEAVES;
    let (m, i) = (1 + b % n, b % n);
    let mut tree: &[Hash] = &f.leaves[..n as usize];
    let root = f.roots[n as usize];

    let genuine = merkle::inclusion_proof(i, n, &mut tree).expect("index in range");
    merkle::verify_inclusion(i, n, &f.leaves[i as usize], &genuine, &root)
        .expect("a genuine inclusion proof verifies");
    let (mut index, mut proof) = (i, genuine.clone());
    edit(&mut proof, &mut index, data, n);
    assert_eq!(
        merkle::verify_inclusion(index, n, &f.leaves[i as usize], &proof, &root).is_ok(),
        (index, &proof) == (i, &genuine),
        "inclusion of leaf {i} in {n}: an edited proof verified, or the genuine one did not"
    );

    let genuine = merkle::consistency_proof(m, n, &mut tree).expect("0 < m <= n");
    let old = f.roots[m as usize];
    merkle::verify_consistency(m, n, &old, &root, &genuine)
        .expect("a genuine consistency proof verifies");
    let (mut unused, mut proof) = (0, genuine.clone());
    edit(&mut proof, &mut unused, data, n);
    assert_eq!(
        merkle::verify_consistency(m, n, &old, &root, &proof).is_ok(),
        proof == genuine,
        "consistency {m} -> {n}: an edited proof verified, or the genuine one did not"
    );
}

/// Edits a proof with `ops` (two bytes each): flip a bit, drop, duplicate or
/// swap hashes, append a root, or move the leaf index.
fn edit(proof: &mut Vec<Hash>, index: &mut u64, ops: &[u8], n: u64) {
    for op in ops.chunks_exact(2).take(16) {
        let (op, v) = (op[0], op[1] as usize);
        let len = proof.len();
        match op % 6 {
            0 if len > 0 => proof[v % len][(op as usize >> 3) % 32] ^= 1 << (v % 8),
            1 if len > 0 => {
                proof.remove(v % len);
            }
            2 if len > 0 => proof.insert(v % (len + 1), proof[v % len]),
            3 if len > 0 => proof.swap(v % len, (op as usize >> 3) % len),
            4 => proof.push(fixture().roots[1 + v % n as usize]),
            5 => *index = v as u64 % n,
            _ => {}
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    match mode % 4 {
        0 => {
            if let Ok(s) = std::str::from_utf8(rest) {
                arbitrary_note(s);
            }
        }
        1 => {
            if let Ok(s) = std::str::from_utf8(rest) {
                signed_body(s);
            }
        }
        2 => {
            if let Ok(s) = std::str::from_utf8(rest) {
                verifier_key(s);
            }
        }
        _ => proofs(rest),
    }
});
