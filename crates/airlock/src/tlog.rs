//! Client-side transparency-log checks: a saved checkpoint against the log's
//! latest one (`audit verify --since`) and an inclusion proof against its
//! signed checkpoint (`audit prove`). Every check is done here, with the key
//! the auditor chose; the server's answers are only inputs.

use std::path::Path;

use airlock_core::merkle::{self, Hash};
use airlock_core::note::{Note, NoteError, TreeHead, VerifierKey, MAX_NOTE_BYTES};
use anyhow::{anyhow, bail, Context, Result};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use serde::Serialize;
use serde_json::Value;

/// Outcome of `--since`: does the current log extend the saved checkpoint?
#[derive(Debug, Serialize)]
pub struct SinceReport {
    pub ok: bool,
    /// Tree size of the saved checkpoint.
    pub from: Option<u64>,
    /// Tree size of the log's latest signed checkpoint.
    pub to: Option<u64>,
    /// Verifier key both checkpoints were checked with.
    pub key: String,
    /// What is wrong, and what it means.
    pub problem: Option<String>,
}

/// Reads a saved checkpoint file (bounded, like any note).
pub fn read_note_file(path: &Path) -> Result<String> {
    let meta = std::fs::metadata(path)
        .with_context(|| format!("cannot read checkpoint {}", path.display()))?;
    if meta.len() > MAX_NOTE_BYTES as u64 {
        bail!(
            "{} is larger than {MAX_NOTE_BYTES} bytes: not a checkpoint (save it with `airlock audit checkpoint > FILE`)",
            path.display()
        );
    }
    std::fs::read_to_string(path)
        .with_context(|| format!("cannot read checkpoint {}", path.display()))
}

/// The key to check with: `--key` if given, else the server's.
pub fn choose_key(
    pinned: Option<&str>,
    server: impl FnOnce() -> Result<VerifierKey>,
) -> Result<(VerifierKey, bool)> {
    match pinned {
        Some(k) => Ok((
            VerifierKey::parse(k).map_err(|e| anyhow!("--key: {e}"))?,
            true,
        )),
        None => Ok((server()?, false)),
    }
}

fn open(text: &str, key: &VerifierKey) -> Result<TreeHead, NoteError> {
    let note = Note::parse(text)?;
    note.verify(key)?;
    TreeHead::parse_text(&note.text)
}

/// Checks that the log whose latest signed checkpoint is `current` is an
/// append-only extension of `saved`; `proof(from, to)` fetches or computes a
/// consistency proof.
pub fn check_since(
    saved: &str,
    current: Option<&str>,
    key: &VerifierKey,
    pinned: bool,
    proof: impl FnOnce(u64, u64) -> Result<Vec<Hash>>,
) -> SinceReport {
    let whose = if pinned {
        "the pinned key"
    } else {
        "the server's current key"
    };
    let mut r = SinceReport {
        ok: false,
        from: None,
        to: None,
        key: key.encode(),
        problem: None,
    };
    let fail = |mut r: SinceReport, why: String| {
        r.problem = Some(why);
        r
    };
    let old = match open(saved, key) {
        Ok(h) => h,
        Err(e @ (NoteError::NotSignedBy { .. } | NoteError::BadSignature(_))) => {
            return fail(r, format!(
                "the saved checkpoint does not verify with {whose} ({e}): the signing key was replaced, or the checkpoint is not from this log"
            ))
        }
        Err(e) => return fail(r, format!("the saved checkpoint is unreadable: {e}")),
    };
    r.from = Some(old.size);
    let Some(current) = current else {
        return fail(
            r,
            "the log has no signed checkpoint: it was emptied or replaced".into(),
        );
    };
    let new = match open(current, key) {
        Ok(h) => h,
        Err(e @ (NoteError::NotSignedBy { .. } | NoteError::BadSignature(_))) => {
            return fail(r, format!(
                "the log's latest checkpoint does not verify with {whose} ({e}): the signing key was replaced"
            ))
        }
        Err(e) => return fail(r, format!("the log's latest checkpoint is unreadable: {e}")),
    };
    r.to = Some(new.size);
    if old.origin != new.origin {
        return fail(
            r,
            format!(
                "the saved checkpoint is for log `{}`, this log is `{}`",
                old.origin, new.origin
            ),
        );
    }
    if old.size > new.size {
        return fail(r, format!(
            "the log shrank: the saved checkpoint covers {} events, the latest only {}; events were deleted or the log replaced",
            old.size, new.size
        ));
    }
    let p = if old.size == new.size {
        Vec::new()
    } else {
        match proof(old.size, new.size) {
            Ok(p) => p,
            Err(e) => return fail(r, format!("cannot get a consistency proof: {e}")),
        }
    };
    if let Err(e) = merkle::verify_consistency(old.size, new.size, &old.root, &new.root, &p) {
        return fail(r, format!(
            "the log is not an append-only extension of the saved checkpoint ({e}): history up to event {} was rewritten",
            old.size
        ));
    }
    r.ok = true;
    r
}

fn hashes(v: &Value, field: &str) -> Result<Vec<Hash>> {
    let arr = v[field]
        .as_array()
        .ok_or_else(|| anyhow!("`{field}` is not a list"))?;
    if arr.len() > merkle::MAX_PROOF_LEN {
        bail!(
            "`{field}` has {} hashes, more than any proof needs",
            arr.len()
        );
    }
    arr.iter().map(|h| hash(h, field)).collect()
}

fn hash(v: &Value, field: &str) -> Result<Hash> {
    let s = v
        .as_str()
        .ok_or_else(|| anyhow!("`{field}` holds a non-string"))?;
    B64.decode(s)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| anyhow!("`{field}` holds `{s}`, not 32 bytes of base64"))
}

/// Decodes a consistency proof answer `{"from","to","proof"}`, checking it is for `from..to`.
pub fn consistency_answer(v: &Value, from: u64, to: u64) -> Result<Vec<Hash>> {
    if v["from"].as_u64() != Some(from) || v["to"].as_u64() != Some(to) {
        bail!("the server answered a proof for other sizes");
    }
    hashes(v, "proof")
}

/// Checks an inclusion proof answer (`GET /api/v1/audit/proof/{seq}`) for event `seq`.
pub fn check_inclusion(v: &Value, seq: u64, key: &VerifierKey) -> Result<()> {
    if seq == 0 {
        bail!("audit events are numbered from 1");
    }
    let note = v["checkpoint"].as_str().context("no `checkpoint` note")?;
    let head = open(note, key).map_err(|e| {
        anyhow!(
            "the checkpoint does not verify with key {}: {e}",
            key.encode()
        )
    })?;
    let size = v["tree_size"].as_u64().context("no `tree_size`")?;
    if size != head.size {
        bail!(
            "the proof is for size {size}, the signed checkpoint for {}",
            head.size
        );
    }
    if v["seq"].as_u64() != Some(seq) || v["leaf_index"].as_u64() != Some(seq - 1) {
        bail!("the proof is not for event {seq}");
    }
    let leaf = hash(&v["leaf_hash"], "leaf_hash")?;
    if let Some(body) = v["body"].as_str() {
        if merkle::leaf_hash(body.as_bytes()) != leaf {
            bail!("the event body does not hash to `leaf_hash`");
        }
    }
    let proof = hashes(v, "proof")?;
    merkle::verify_inclusion(seq - 1, size, &leaf, &proof, &head.root)
        .map_err(|e| anyhow!("event {seq} is not in the signed tree of {size} events: {e}"))
}
