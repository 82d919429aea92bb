//! Audit events as read back from the store: `SealedEvent::to_event` on an
//! arbitrary body, and the chain verifier fed arbitrary `(seq, body, hash)`
//! rows and checkpoints. Rows are `flags, len, body[len]` (+ 8 seq bytes and
//! 32 hash bytes when the flags say the row is forged); honest rows get the
//! next seq and the true chain hash, so long valid chains are reachable.
//! Checkpoints are signed tree heads (notes over the true chain hash and
//! Merkle root, one due every 2 events); an honest chain must verify exactly
//! when no due checkpoint is missing.
#![no_main]

use airlock_core::audit_chain::{
    chain_hash, ChainVerifier, CheckpointSigner, SealedEvent, GENESIS,
};
use airlock_core::merkle::Frontier;
use std::sync::OnceLock;

use ed25519_dalek::SigningKey;
use libfuzzer_sys::fuzz_target;

/// Signing is the slow part: one signer for the whole run, a few checkpoints per input.
const MAX_CHECKPOINTS: usize = 8;
/// `checkpoint_every` signed in the notes.
const EVERY: u64 = 2;

fn signer() -> &'static CheckpointSigner {
    static S: OnceLock<CheckpointSigner> = OnceLock::new();
    S.get_or_init(|| CheckpointSigner::new(SigningKey::from_bytes(&[7u8; 32]), EVERY))
}

fn take<'a>(data: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
    if data.len() < n {
        return None;
    }
    let (head, tail) = data.split_at(n);
    *data = tail;
    Some(head)
}

fuzz_target!(|input: &[u8]| {
    // 1. One stored body decoded for display and export.
    let ev = SealedEvent {
        seq: 1,
        body: input.to_vec(),
        hash: chain_hash(&GENESIS, input),
    };
    if let Some(e) = ev.to_event() {
        let _ = serde_json::to_vec(&e);
    }

    // 2. A stream of rows through the verifier.
    let signer = signer();
    let mut data = input;
    let Some(&[head_flags]) = take(&mut data, 1) else {
        return;
    };
    let mut rows: Vec<(u64, Vec<u8>, Vec<u8>)> = Vec::new();
    let mut checkpoints = Vec::new();
    let (mut tree, mut signed) = (Frontier::new(), Vec::new());
    let at = time::OffsetDateTime::UNIX_EPOCH;
    let (mut prev, mut next_seq, mut honest) = (GENESIS, 1u64, true);
    while let (Some(&[flags]), Some(&[len])) = (take(&mut data, 1), take(&mut data, 1)) {
        let Some(body) = take(&mut data, len as usize) else {
            break;
        };
        let seq = if flags & 1 == 1 {
            honest = false;
            match take(&mut data, 8) {
                Some(b) => u64::from_be_bytes(b.try_into().expect("8 bytes")),
                None => break,
            }
        } else {
            next_seq
        };
        let true_hash = chain_hash(&prev, body);
        let hash = if flags & 2 == 2 {
            honest = false;
            let n = (flags >> 4) as usize % 33;
            match take(&mut data, n) {
                Some(b) => b.to_vec(),
                None => break,
            }
        } else {
            true_hash.to_vec()
        };
        tree.push_body(body);
        if flags & 4 == 4 && checkpoints.len() < MAX_CHECKPOINTS {
            // A checkpoint over this row: signed by the right key, over the true hashes.
            checkpoints.push(signer.sign_head(seq, &true_hash, &tree.root(), at));
            signed.push(seq);
        }
        if flags & 8 == 8 && checkpoints.len() < MAX_CHECKPOINTS {
            honest = false;
            let mut bad = signer.sign_head(seq, &true_hash, &tree.root(), at);
            bad.signature[0] ^= 1;
            checkpoints.push(bad);
        }
        prev = true_hash;
        next_seq = next_seq.wrapping_add(1);
        rows.push((seq, body.to_vec(), hash));
    }
    let key = (head_flags & 1 == 0).then(|| signer.verifying_key());
    let head = (head_flags & 2 == 2).then_some(u64::from(head_flags >> 2));
    let mut v = ChainVerifier::new(key, checkpoints);
    for (seq, body, hash) in &rows {
        v.feed(*seq, body, hash);
    }
    let report = v.finish(head);
    if honest && head.is_none_or(|h| h <= rows.len() as u64) {
        // Up to the last note, its interval applies: a checkpoint every EVERY events.
        let last = signed.iter().copied().max().unwrap_or(0);
        let missing = (1..=last).find(|s| s % EVERY == 0 && !signed.contains(s));
        match missing {
            None => {
                assert!(report.ok, "an honest chain was refused: {report:?}");
                assert_eq!(report.events, rows.len() as u64);
            }
            Some(s) => assert!(
                !report.ok,
                "checkpoint {s} is missing, yet the chain verified: {report:?}"
            ),
        }
    }
});
