//! Audit-chain maths: canonical event bytes, `hash = SHA-256(prev || bytes)`,
//! Ed25519-signed checkpoints, and an incremental verifier that names the first
//! bad sequence number. Storage of events is the store's job, not this module's.

use std::collections::BTreeMap;

use ed25519_dalek::{Signature, Signer, SigningKey, Verifier as _, VerifyingKey};
use serde::Serialize;
use sha2::{Digest, Sha256};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// Hash that precedes the first event.
pub const GENESIS: [u8; 32] = [0u8; 32];

/// Domain separation for checkpoint signatures.
const CHECKPOINT_TAG: &[u8] = b"airlock-audit-checkpoint-v1";

/// An audit event before it has a place in the chain.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditDraft {
    /// Dotted kind, e.g. `request.created`, `grant.applied`, `breakglass.activated`.
    pub kind: String,
    /// Principal (or `system`) that caused it.
    pub actor: String,
    /// What it is about, e.g. `request:abc123`.
    pub subject: String,
    /// Kind-specific details.
    pub data: serde_json::Value,
}

impl AuditDraft {
    /// Builds a draft.
    pub fn new(
        kind: &str,
        actor: &str,
        subject: impl Into<String>,
        data: serde_json::Value,
    ) -> Self {
        AuditDraft {
            kind: kind.into(),
            actor: actor.into(),
            subject: subject.into(),
            data,
        }
    }
}

/// A chained audit event as stored: the canonical bytes are what was hashed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealedEvent {
    pub seq: u64,
    /// Canonical JSON bytes of the event (the hashed input).
    pub body: Vec<u8>,
    pub hash: [u8; 32],
}

/// An event as shown to people and exported (`{"seq","kind","at","actor","subject","data","hash"}`).
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq)]
pub struct AuditEvent {
    pub seq: u64,
    pub kind: String,
    pub at: String,
    pub actor: String,
    pub subject: String,
    pub data: serde_json::Value,
    pub hash: String,
}

impl SealedEvent {
    /// Decodes the stored body for display; `None` if it is not an airlock event.
    pub fn to_event(&self) -> Option<AuditEvent> {
        #[derive(serde::Deserialize)]
        struct Body {
            seq: u64,
            at: String,
            kind: String,
            actor: String,
            subject: String,
            data: serde_json::Value,
        }
        let b: Body = serde_json::from_slice(&self.body).ok()?;
        Some(AuditEvent {
            seq: b.seq,
            kind: b.kind,
            at: b.at,
            actor: b.actor,
            subject: b.subject,
            data: b.data,
            hash: hex::encode(self.hash),
        })
    }
}

/// Canonical bytes: compact JSON, fixed top-level order, object keys sorted at every depth.
pub fn canonical_bytes(seq: u64, at: OffsetDateTime, draft: &AuditDraft) -> Vec<u8> {
    let at = at
        .to_offset(time::UtcOffset::UTC)
        .format(&Rfc3339)
        .unwrap_or_else(|_| "1970-01-01T00:00:00Z".into());
    let mut out = Vec::with_capacity(160);
    out.extend_from_slice(b"{\"seq\":");
    out.extend_from_slice(seq.to_string().as_bytes());
    for (k, v) in [
        ("at", &at),
        ("kind", &draft.kind),
        ("actor", &draft.actor),
        ("subject", &draft.subject),
    ] {
        out.extend_from_slice(b",\"");
        out.extend_from_slice(k.as_bytes());
        out.extend_from_slice(b"\":");
        write_canonical(&serde_json::Value::String(v.clone()), &mut out);
    }
    out.extend_from_slice(b",\"data\":");
    write_canonical(&draft.data, &mut out);
    out.push(b'}');
    out
}

fn write_canonical(v: &serde_json::Value, out: &mut Vec<u8>) {
    match v {
        serde_json::Value::Object(map) => {
            let sorted: BTreeMap<&String, &serde_json::Value> = map.iter().collect();
            out.push(b'{');
            for (i, (k, v)) in sorted.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                out.extend_from_slice(serde_json::to_string(k).unwrap_or_default().as_bytes());
                out.push(b':');
                write_canonical(v, out);
            }
            out.push(b'}');
        }
        serde_json::Value::Array(items) => {
            out.push(b'[');
            for (i, v) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_canonical(v, out);
            }
            out.push(b']');
        }
        scalar => {
            out.extend_from_slice(serde_json::to_string(scalar).unwrap_or_default().as_bytes())
        }
    }
}

/// `SHA-256(prev || body)`.
pub fn chain_hash(prev: &[u8; 32], body: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(prev);
    h.update(body);
    h.finalize().into()
}

/// Seals a draft as event `seq` after `prev`.
pub fn seal(prev: &[u8; 32], seq: u64, at: OffsetDateTime, draft: &AuditDraft) -> SealedEvent {
    let body = canonical_bytes(seq, at, draft);
    let hash = chain_hash(prev, &body);
    SealedEvent { seq, body, hash }
}

/// A signed statement "event `seq` has hash `hash`".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    pub seq: u64,
    pub hash: [u8; 32],
    pub signature: [u8; 64],
}

fn checkpoint_message(seq: u64, hash: &[u8; 32]) -> Vec<u8> {
    let mut m = Vec::with_capacity(CHECKPOINT_TAG.len() + 40);
    m.extend_from_slice(CHECKPOINT_TAG);
    m.extend_from_slice(&seq.to_be_bytes());
    m.extend_from_slice(hash);
    m
}

/// Signs checkpoints every `every` events.
#[derive(Clone)]
pub struct CheckpointSigner {
    key: SigningKey,
    every: u64,
}

impl CheckpointSigner {
    /// A signer with the server's key; `every` is clamped to at least 1.
    pub fn new(key: SigningKey, every: u64) -> Self {
        CheckpointSigner {
            key,
            every: every.max(1),
        }
    }
    /// A checkpoint for `event` if its sequence number is due one.
    pub fn maybe_sign(&self, event: &SealedEvent) -> Option<Checkpoint> {
        event
            .seq
            .is_multiple_of(self.every)
            .then(|| self.sign(event.seq, &event.hash))
    }
    /// Signs `(seq, hash)` unconditionally.
    pub fn sign(&self, seq: u64, hash: &[u8; 32]) -> Checkpoint {
        let sig = self.key.sign(&checkpoint_message(seq, hash));
        Checkpoint {
            seq,
            hash: *hash,
            signature: sig.to_bytes(),
        }
    }
    /// The public half, for verifiers.
    pub fn verifying_key(&self) -> VerifyingKey {
        self.key.verifying_key()
    }
}

/// Outcome of `airlock audit verify`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VerifyReport {
    pub ok: bool,
    /// Events read.
    pub events: u64,
    /// First sequence number that is missing, altered or out of place.
    pub first_bad_seq: Option<u64>,
    /// What is wrong at `first_bad_seq`.
    pub problem: Option<String>,
    /// Checkpoints whose signature and hash matched.
    pub checkpoints_verified: u64,
    /// Highest verified checkpoint.
    pub last_checkpoint_seq: Option<u64>,
    /// Hash of the last event read (hex).
    pub head_hash: Option<String>,
}

/// Streams events in stored order and checks chain, numbering and checkpoints.
pub struct ChainVerifier {
    key: Option<VerifyingKey>,
    checkpoints: BTreeMap<u64, Checkpoint>,
    expected_seq: u64,
    prev: [u8; 32],
    events: u64,
    bad: Option<(u64, String)>,
    verified: u64,
    last_cp: Option<u64>,
}

impl ChainVerifier {
    /// `key` verifies checkpoint signatures; without it checkpoints are only hash-checked.
    pub fn new(key: Option<VerifyingKey>, checkpoints: Vec<Checkpoint>) -> Self {
        ChainVerifier {
            key,
            checkpoints: checkpoints.into_iter().map(|c| (c.seq, c)).collect(),
            expected_seq: 1,
            prev: GENESIS,
            events: 0,
            bad: None,
            verified: 0,
            last_cp: None,
        }
    }

    /// Whether a problem was already found (callers may stop reading).
    pub fn failed(&self) -> bool {
        self.bad.is_some()
    }

    fn fail(&mut self, seq: u64, why: String) {
        if self.bad.is_none() {
            self.bad = Some((seq, why));
        }
    }

    /// Feeds the next stored event.
    pub fn feed(&mut self, seq: u64, body: &[u8], stored_hash: &[u8]) {
        if self.bad.is_some() {
            return;
        }
        self.events += 1;
        if seq != self.expected_seq {
            let why = if seq > self.expected_seq {
                format!(
                    "event {} is missing (next stored event is {seq})",
                    self.expected_seq
                )
            } else {
                format!(
                    "event {seq} appears out of order after {}",
                    self.expected_seq - 1
                )
            };
            return self.fail(self.expected_seq, why);
        }
        let h = chain_hash(&self.prev, body);
        if stored_hash != h {
            return self.fail(
                seq,
                format!("event {seq} does not match its hash (edited, inserted or reordered)"),
            );
        }
        if let Some(cp) = self.checkpoints.get(&seq).cloned() {
            if cp.hash != h {
                return self.fail(
                    seq,
                    format!("checkpoint {seq} names a different hash (chain rewritten)"),
                );
            }
            if let Some(k) = &self.key {
                if k.verify(
                    &checkpoint_message(seq, &cp.hash),
                    &Signature::from_bytes(&cp.signature),
                )
                .is_err()
                {
                    return self.fail(seq, format!("checkpoint {seq} signature is invalid"));
                }
            }
            self.verified += 1;
            self.last_cp = Some(seq);
        }
        self.prev = h;
        self.expected_seq += 1;
    }

    /// Finishes; `head` is the store's own record of the last sequence number.
    pub fn finish(mut self, head: Option<u64>) -> VerifyReport {
        if self.bad.is_none() {
            let last = self.expected_seq - 1;
            let beyond = self.checkpoints.range(last + 1..).next().map(|(s, _)| *s);
            if let Some(cp) = beyond {
                self.fail(
                    last + 1,
                    format!("events after {last} are missing (signed checkpoint {cp} exists)"),
                );
            } else if head.is_some_and(|h| h > last) {
                self.fail(
                    last + 1,
                    format!(
                        "events after {last} are missing (chain head says {})",
                        head.unwrap_or(0)
                    ),
                );
            }
        }
        let (first_bad_seq, problem) = match self.bad {
            Some((s, w)) => (Some(s), Some(w)),
            None => (None, None),
        };
        VerifyReport {
            ok: first_bad_seq.is_none(),
            events: self.events,
            first_bad_seq,
            problem,
            checkpoints_verified: self.verified,
            last_checkpoint_seq: self.last_cp,
            head_hash: (self.expected_seq > 1).then(|| hex::encode(self.prev)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn key() -> SigningKey {
        SigningKey::from_bytes(&[7u8; 32])
    }

    fn chain(n: u64, every: u64) -> (Vec<SealedEvent>, Vec<Checkpoint>) {
        let signer = CheckpointSigner::new(key(), every);
        let mut prev = GENESIS;
        let mut evs = vec![];
        let mut cps = vec![];
        for seq in 1..=n {
            let d = AuditDraft::new(
                "request.created",
                "alice",
                format!("request:{seq}"),
                serde_json::json!({"b": 1, "a": [seq]}),
            );
            let e = seal(&prev, seq, OffsetDateTime::UNIX_EPOCH, &d);
            prev = e.hash;
            cps.extend(signer.maybe_sign(&e));
            evs.push(e);
        }
        (evs, cps)
    }

    fn verify(evs: &[SealedEvent], cps: Vec<Checkpoint>, head: Option<u64>) -> VerifyReport {
        let mut v = ChainVerifier::new(Some(key().verifying_key()), cps);
        for e in evs {
            v.feed(e.seq, &e.body, &e.hash);
        }
        v.finish(head)
    }

    #[test]
    fn canonical_bytes_sort_keys_and_are_stable() {
        let d = AuditDraft::new(
            "k",
            "a",
            "s",
            serde_json::json!({"z": 1, "a": {"y": 2, "b": 3}}),
        );
        let b = canonical_bytes(5, OffsetDateTime::UNIX_EPOCH, &d);
        assert_eq!(
            String::from_utf8(b).unwrap(),
            r#"{"seq":5,"at":"1970-01-01T00:00:00Z","kind":"k","actor":"a","subject":"s","data":{"a":{"b":3,"y":2},"z":1}}"#
        );
    }

    #[test]
    fn intact_chain_verifies_with_checkpoints() {
        let (evs, cps) = chain(25, 10);
        let r = verify(&evs, cps, Some(25));
        assert!(r.ok, "{r:?}");
        assert_eq!(
            (r.events, r.checkpoints_verified, r.last_checkpoint_seq),
            (25, 2, Some(20))
        );
    }

    #[test]
    fn tail_truncation_behind_a_checkpoint_is_detected() {
        let (evs, cps) = chain(25, 10);
        let r = verify(&evs[..15], cps, None);
        assert_eq!(r.first_bad_seq, Some(16));
    }

    #[test]
    fn forged_checkpoint_signature_is_detected() {
        let (evs, mut cps) = chain(10, 10);
        cps[0].signature[0] ^= 1;
        assert_eq!(verify(&evs, cps, None).first_bad_seq, Some(10));
    }

    #[derive(Debug, Clone)]
    enum Tamper {
        Edit(usize),
        Delete(usize),
        Swap(usize),
        Truncate(usize),
        Insert(usize),
    }

    fn tamper() -> impl Strategy<Value = Tamper> {
        prop_oneof![
            (0usize..30).prop_map(Tamper::Edit),
            (0usize..30).prop_map(Tamper::Delete),
            (0usize..29).prop_map(Tamper::Swap),
            (0usize..30).prop_map(Tamper::Truncate),
            (0usize..30).prop_map(Tamper::Insert),
        ]
    }

    proptest! {
        #[test]
        fn any_single_tampering_is_detected_at_the_first_bad_seq(t in tamper()) {
            let (mut evs, cps) = chain(30, 7);
            let expected = match t {
                Tamper::Edit(i) => { evs[i].body[10] ^= 0x20; i as u64 + 1 }
                Tamper::Delete(i) => { evs.remove(i); i as u64 + 1 }
                Tamper::Swap(i) => {
                    // Reorder rows but keep the seq column ascending, as an attacker would.
                    let (a, b) = (evs[i].clone(), evs[i + 1].clone());
                    evs[i] = SealedEvent { seq: a.seq, ..b.clone() };
                    evs[i + 1] = SealedEvent { seq: b.seq, ..a };
                    i as u64 + 1
                }
                Tamper::Truncate(i) => { evs.truncate(i); i as u64 + 1 }
                Tamper::Insert(i) => {
                    // A forged event renumbered into place.
                    let prev = if i == 0 { GENESIS } else { evs[i - 1].hash };
                    let forged = seal(&prev, i as u64 + 1, OffsetDateTime::UNIX_EPOCH, &AuditDraft::new("x", "mallory", "s", serde_json::json!({})));
                    evs.insert(i, forged);
                    for (j, e) in evs.iter_mut().enumerate().skip(i + 1) { e.seq = j as u64 + 1; }
                    // Caught at the forged event when a signed checkpoint covers its seq,
                    // otherwise at the next event, whose prev hash no longer matches.
                    if (i as u64 + 1).is_multiple_of(7) { i as u64 + 1 } else { i as u64 + 2 }
                }
            };
            let r = verify(&evs, cps, Some(30));
            prop_assert!(!r.ok);
            prop_assert_eq!(r.first_bad_seq, Some(expected), "{:?}", r.problem);
        }
    }
}
