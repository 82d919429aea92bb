//! Audit-chain maths: canonical event bytes, `hash = SHA-256(prev || bytes)`,
//! Ed25519-signed checkpoints (C2SP tree heads over the RFC 9162 Merkle tree of
//! the same events), and an incremental verifier that names the first bad
//! sequence number. Storage of events is the store's job, not this module's.

use std::collections::BTreeMap;

use ed25519_dalek::{Signature, Signer, SigningKey, Verifier as _, VerifyingKey};
use serde::Serialize;
use sha2::{Digest, Sha256};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::merkle::{Frontier, Hash};
use crate::note::{Note, TreeHead, VerifierKey};

/// Hash that precedes the first event.
pub const GENESIS: [u8; 32] = [0u8; 32];

/// Origin used when none is configured.
pub const DEFAULT_ORIGIN: &str = "localhost/audit";

/// Domain separation for (pre-note) checkpoint signatures.
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

/// A signed statement "event `seq` has chain hash `hash`". Rows written since
/// the transparency log carry `note`, a signed C2SP checkpoint that also names
/// the Merkle root and the interval; `signature` is then the note's signature.
/// Older rows have no note and sign `(seq, hash)` directly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    pub seq: u64,
    pub hash: [u8; 32],
    pub signature: [u8; 64],
    /// The signed tree head (C2SP `tlog-checkpoint` signed note).
    pub note: Option<String>,
}

fn checkpoint_message(seq: u64, hash: &[u8; 32]) -> Vec<u8> {
    let mut m = Vec::with_capacity(CHECKPOINT_TAG.len() + 40);
    m.extend_from_slice(CHECKPOINT_TAG);
    m.extend_from_slice(&seq.to_be_bytes());
    m.extend_from_slice(hash);
    m
}

/// Signs tree heads: every `every` events in the append transaction, and
/// whenever the server's background task finds the head moved.
#[derive(Clone)]
pub struct CheckpointSigner {
    key: SigningKey,
    every: u64,
    origin: String,
}

impl CheckpointSigner {
    /// A signer with the server's key; `every` is clamped to at least 1.
    pub fn new(key: SigningKey, every: u64) -> Self {
        CheckpointSigner {
            key,
            every: every.max(1),
            origin: DEFAULT_ORIGIN.into(),
        }
    }
    /// Uses `origin` (`[server] audit_origin`) as the checkpoints' origin and key name.
    pub fn with_origin(mut self, origin: &str) -> Self {
        if crate::note::valid_name(origin) {
            self.origin = origin.into();
        }
        self
    }
    /// The log origin.
    pub fn origin(&self) -> &str {
        &self.origin
    }
    /// `[server] checkpoint_every`.
    pub fn every(&self) -> u64 {
        self.every
    }
    /// Whether a checkpoint is due at `seq` (inside the append transaction).
    pub fn due(&self, seq: u64) -> bool {
        seq.is_multiple_of(self.every)
    }
    /// Signs the tree head of `size` events.
    pub fn sign_head(
        &self,
        size: u64,
        chain: &Hash,
        root: &Hash,
        now: OffsetDateTime,
    ) -> Checkpoint {
        let head = TreeHead {
            origin: self.origin.clone(),
            size,
            root: *root,
            chain: *chain,
            checkpoint_every: self.every,
            time: now,
        };
        let text = head.to_text();
        let signature = self.key.sign(text.as_bytes()).to_bytes();
        // The origin is a valid key name (checked in `with_origin`), so signing cannot fail.
        let note = head.sign(&self.key).ok();
        Checkpoint {
            seq: size,
            hash: *chain,
            signature,
            note,
        }
    }
    /// Signs `(seq, hash)` in the pre-note format (kept for tests of old rows).
    pub fn sign_legacy(&self, seq: u64, hash: &[u8; 32]) -> Checkpoint {
        let sig = self.key.sign(&checkpoint_message(seq, hash));
        Checkpoint {
            seq,
            hash: *hash,
            signature: sig.to_bytes(),
            note: None,
        }
    }
    /// The public half, for verifiers.
    pub fn verifying_key(&self) -> VerifyingKey {
        self.key.verifying_key()
    }
    /// The note verifier key (`origin+hash+base64`).
    pub fn verifier_key(&self) -> VerifierKey {
        VerifierKey {
            name: self.origin.clone(),
            key: self.key.verifying_key(),
        }
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
    /// Due checkpoints (every `checkpoint_every` events) whose signature and hashes matched.
    pub checkpoints_verified: u64,
    /// Highest verified checkpoint.
    pub last_checkpoint_seq: Option<u64>,
    /// Hash of the last event read (hex).
    pub head_hash: Option<String>,
    /// All signed checkpoints verified, due or not (the once-a-second tree heads too).
    pub signed_heads_verified: u64,
    /// Merkle tree root over the events read (base64, as in checkpoints).
    pub root_hash: Option<String>,
}

/// Streams events in stored order and checks chain, numbering, the Merkle
/// root signed in each checkpoint, and that every due checkpoint exists.
/// Cloneable, so a verified prefix can be kept and later events fed on top
/// ([`resume_with`](Self::resume_with)).
#[derive(Clone)]
pub struct ChainVerifier {
    key: Option<VerifyingKey>,
    checkpoints: BTreeMap<u64, Checkpoint>,
    /// Sizes of parseable notes with their signed interval, ascending.
    intervals: Vec<(u64, u64)>,
    cover: usize,
    every: Option<u64>,
    expected_seq: u64,
    prev: [u8; 32],
    tree: Frontier,
    leaves: Option<Vec<Hash>>,
    events: u64,
    bad: Option<(u64, String)>,
    verified: u64,
    heads: u64,
    last_cp: Option<u64>,
}

impl ChainVerifier {
    /// `key` verifies checkpoint signatures; without it checkpoints are only hash-checked.
    pub fn new(key: Option<VerifyingKey>, checkpoints: Vec<Checkpoint>) -> Self {
        let intervals = checkpoints
            .iter()
            .filter_map(|c| {
                let note = Note::parse(c.note.as_deref()?).ok()?;
                Some((
                    c.seq,
                    TreeHead::parse_text(&note.text).ok()?.checkpoint_every,
                ))
            })
            .collect::<BTreeMap<_, _>>()
            .into_iter()
            .collect();
        ChainVerifier {
            key,
            checkpoints: checkpoints.into_iter().map(|c| (c.seq, c)).collect(),
            intervals,
            cover: 0,
            every: None,
            expected_seq: 1,
            prev: GENESIS,
            tree: Frontier::new(),
            leaves: None,
            events: 0,
            bad: None,
            verified: 0,
            heads: 0,
            last_cp: None,
        }
    }

    /// Requires a checkpoint every `every` events after the last signed one
    /// (the configured `[server] checkpoint_every`); up to a signed checkpoint,
    /// the interval signed in it applies, so a config edit cannot excuse a gap.
    pub fn require_every(mut self, every: u64) -> Self {
        self.every = Some(every.max(1));
        self
    }

    /// Keeps every leaf hash, so [`finish_with_leaves`](Self::finish_with_leaves)
    /// can hand them to proof generation (32 bytes per event).
    pub fn keep_leaves(mut self) -> Self {
        self.leaves = Some(Vec::new());
        self
    }

    /// Hash of the last event fed (the genesis hash before any).
    pub fn last_hash(&self) -> [u8; 32] {
        self.prev
    }

    /// The sequence number of the next event this verifier expects.
    pub fn next_seq(&self) -> u64 {
        self.expected_seq
    }

    /// Continues a verified prefix: adds checkpoints signed since (those at
    /// or below the prefix were checked already, or came too late to be).
    pub fn resume_with(&mut self, checkpoints: Vec<Checkpoint>) {
        let last = self.expected_seq - 1;
        for c in checkpoints.into_iter().filter(|c| c.seq > last) {
            let interval = c
                .note
                .as_deref()
                .and_then(|n| Note::parse(n).ok())
                .and_then(|n| TreeHead::parse_text(&n.text).ok())
                .map(|h| h.checkpoint_every);
            if let Some(every) = interval {
                if self.intervals.last().is_none_or(|(s, _)| *s < c.seq) {
                    self.intervals.push((c.seq, every));
                }
            }
            self.checkpoints.insert(c.seq, c);
        }
    }

    /// The report as if the stream ended here, keeping this verifier usable.
    pub fn report(&self, head: Option<u64>) -> VerifyReport {
        let mut v = self.clone();
        v.leaves = None;
        v.finish(head)
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

    /// The interval that applies at `seq`: the one signed in the first note at or after it.
    fn interval_at(&mut self, seq: u64) -> Option<u64> {
        while self
            .intervals
            .get(self.cover)
            .is_some_and(|(s, _)| *s < seq)
        {
            self.cover += 1;
        }
        self.intervals
            .get(self.cover)
            .map(|(_, e)| *e)
            .or(self.every)
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
        let leaf = crate::merkle::leaf_hash(body);
        self.tree.push(leaf);
        if let Some(l) = &mut self.leaves {
            l.push(leaf);
        }
        let due = self.interval_at(seq).filter(|e| seq.is_multiple_of(*e));
        if let Some(cp) = self.checkpoints.get(&seq).cloned() {
            if let Err(why) = self.check_checkpoint(&cp, &h) {
                return self.fail(seq, why.0);
            }
            self.heads += 1;
            if due.is_some() || cp.note.is_none() {
                self.verified += 1;
            }
            self.last_cp = Some(seq);
        } else if let Some(every) = due {
            return self.fail(
                seq,
                format!(
                    "signed checkpoint {seq} is missing (one is due every {every} events): checkpoints were deleted"
                ),
            );
        }
        self.prev = h;
        self.expected_seq += 1;
    }

    fn check_checkpoint(&self, cp: &Checkpoint, h: &Hash) -> Result<(), CheckpointProblem> {
        let seq = cp.seq;
        if &cp.hash != h {
            return Err(
                format!("checkpoint {seq} names a different hash (chain rewritten)").into(),
            );
        }
        let Some(text) = &cp.note else {
            if let Some(k) = &self.key {
                if k.verify(
                    &checkpoint_message(seq, &cp.hash),
                    &Signature::from_bytes(&cp.signature),
                )
                .is_err()
                {
                    return Err(format!("checkpoint {seq} signature is invalid").into());
                }
            }
            return Ok(());
        };
        let note = Note::parse(text).map_err(|e| format!("checkpoint {seq}: {e}"))?;
        let head =
            TreeHead::parse_text(&note.text).map_err(|e| format!("checkpoint {seq}: {e}"))?;
        if let Some(k) = &self.key {
            let vk = VerifierKey {
                name: head.origin.clone(),
                key: *k,
            };
            note.verify(&vk)
                .map_err(|e| format!("checkpoint {seq} signature is invalid: {e}"))?;
            if note.signature_by(&vk) != Some(cp.signature) {
                return Err(format!(
                    "checkpoint {seq} signature is invalid (the stored signature is not the note's)"
                )
                .into());
            }
        }
        if head.size != seq || &head.chain != h {
            return Err(format!(
                "checkpoint {seq} note names another tree size or chain hash (chain rewritten)"
            )
            .into());
        }
        if head.root != self.tree.root() {
            return Err(format!(
                "checkpoint {seq} names a different Merkle root (events rewritten)"
            )
            .into());
        }
        Ok(())
    }

    /// Finishes; `head` is the store's own record of the last sequence number.
    pub fn finish(self, head: Option<u64>) -> VerifyReport {
        self.finish_with_leaves(head).0
    }

    /// [`finish`](Self::finish), also returning the leaf hashes kept by [`keep_leaves`](Self::keep_leaves).
    pub fn finish_with_leaves(mut self, head: Option<u64>) -> (VerifyReport, Vec<Hash>) {
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
        use base64::Engine as _;
        let report = VerifyReport {
            ok: first_bad_seq.is_none(),
            events: self.events,
            first_bad_seq,
            problem,
            checkpoints_verified: self.verified,
            last_checkpoint_seq: self.last_cp,
            head_hash: (self.expected_seq > 1).then(|| hex::encode(self.prev)),
            signed_heads_verified: self.heads,
            root_hash: (self.expected_seq > 1)
                .then(|| base64::engine::general_purpose::STANDARD.encode(self.tree.root())),
        };
        (report, self.leaves.unwrap_or_default())
    }
}

/// Why a stored checkpoint does not vouch for the chain (the verifier's
/// report carries the text, so it is kept as one).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct CheckpointProblem(String);

/// Lets the checks in `check_checkpoint` write `format!(...)?`.
impl From<String> for CheckpointProblem {
    fn from(why: String) -> Self {
        CheckpointProblem(why)
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
        let mut tree = Frontier::new();
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
            tree.push_body(&e.body);
            if signer.due(seq) {
                cps.push(signer.sign_head(seq, &e.hash, &tree.root(), OffsetDateTime::UNIX_EPOCH));
            }
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
    fn verifying_in_increments_reports_what_one_full_pass_does() {
        let (evs, cps) = chain(40, 7);
        let full = verify(&evs, cps.clone(), Some(40));
        assert!(full.ok, "{full:?}");
        let mut v = ChainVerifier::new(
            Some(key().verifying_key()),
            cps.iter().filter(|c| c.seq <= 15).cloned().collect(),
        )
        .require_every(7);
        for e in &evs[..15] {
            v.feed(e.seq, &e.body, &e.hash);
        }
        assert!(v.report(Some(15)).ok);
        v.resume_with(cps.clone());
        for e in &evs[15..] {
            v.feed(e.seq, &e.body, &e.hash);
        }
        assert_eq!(v.report(Some(40)), full);
        // A later event that was tampered with is still caught on the next increment.
        let (mut evs2, cps2) = chain(40, 7);
        evs2[30].body[10] ^= 0x20;
        let mut v = ChainVerifier::new(Some(key().verifying_key()), vec![]).require_every(7);
        v.resume_with(cps2.iter().filter(|c| c.seq <= 20).cloned().collect());
        for e in &evs2[..20] {
            v.feed(e.seq, &e.body, &e.hash);
        }
        assert!(v.report(Some(20)).ok);
        v.resume_with(cps2);
        for e in &evs2[20..] {
            v.feed(e.seq, &e.body, &e.hash);
        }
        assert_eq!(v.report(Some(40)).first_bad_seq, Some(31));
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

    /// Rewrites the chain from `from` on, as someone holding the database would.
    fn rechain(evs: &mut [SealedEvent]) {
        let mut prev = GENESIS;
        for e in evs.iter_mut() {
            e.hash = chain_hash(&prev, &e.body);
            prev = e.hash;
        }
    }

    #[test]
    fn a_rewritten_chain_without_its_checkpoints_names_the_first_missing_one() {
        let (mut evs, cps) = chain(25, 5);
        evs[2].body[10] ^= 0x20;
        rechain(&mut evs);
        let kept: Vec<Checkpoint> = cps.into_iter().filter(|c| c.seq < 3).collect();
        let mut v = ChainVerifier::new(Some(key().verifying_key()), kept).require_every(5);
        for e in &evs {
            v.feed(e.seq, &e.body, &e.hash);
        }
        let r = v.finish(Some(25));
        assert_eq!(r.first_bad_seq, Some(5), "{r:?}");
        assert!(r.problem.unwrap().contains("checkpoint 5 is missing"));
    }

    #[test]
    fn the_signed_interval_outranks_the_configured_one() {
        let (evs, mut cps) = chain(25, 5);
        // Checkpoint 10 deleted; 15 (signed with interval 5) still covers it.
        cps.retain(|c| c.seq != 10);
        let mut v = ChainVerifier::new(Some(key().verifying_key()), cps).require_every(1000);
        for e in &evs {
            v.feed(e.seq, &e.body, &e.hash);
        }
        assert_eq!(v.finish(Some(25)).first_bad_seq, Some(10));
    }

    #[test]
    fn a_checkpoint_over_another_tree_is_detected() {
        let (evs, mut cps) = chain(10, 5);
        let signer = CheckpointSigner::new(key(), 5);
        cps[1] = signer.sign_head(10, &evs[9].hash, &[7u8; 32], OffsetDateTime::UNIX_EPOCH);
        let r = verify(&evs, cps, None);
        assert_eq!(r.first_bad_seq, Some(10));
        assert!(r.problem.unwrap().contains("Merkle root"));
    }

    #[test]
    fn pre_note_checkpoints_still_verify() {
        let (evs, _) = chain(10, 5);
        let signer = CheckpointSigner::new(key(), 5);
        let cps = vec![
            signer.sign_legacy(5, &evs[4].hash),
            signer.sign_legacy(10, &evs[9].hash),
        ];
        let r = verify(&evs, cps.clone(), Some(10));
        assert!(r.ok, "{r:?}");
        assert_eq!(r.checkpoints_verified, 2);
        let mut bad = cps;
        bad[0].signature[1] ^= 1;
        assert_eq!(verify(&evs, bad, None).first_bad_seq, Some(5));
    }

    #[test]
    fn root_hash_matches_the_checkpoint() {
        let (evs, cps) = chain(10, 5);
        let r = verify(&evs, cps.clone(), Some(10));
        let note = Note::parse(cps[1].note.as_deref().unwrap()).unwrap();
        let head = TreeHead::parse_text(&note.text).unwrap();
        use base64::Engine as _;
        assert_eq!(
            r.root_hash.unwrap(),
            base64::engine::general_purpose::STANDARD.encode(head.root)
        );
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
