//! The audit chain: appending sealed events with their checkpoints under the
//! head row's lock, and reading events, checkpoints and the head back.

use airlock_core::audit_chain::{AuditDraft, Checkpoint, CheckpointSigner, SealedEvent};
use time::OffsetDateTime;

use super::{params, Db, Row, Tx, Value};
use crate::codec;
use crate::StoreResult;

const CHECKPOINT_COLUMNS: &str = "seq, hash, signature, note";

/// Reads and locks the chain head. The lock serialises appenders across
/// replicas; it is taken after any request or run row lock, so lock order is fixed.
fn read_head(tx: &mut dyn Tx) -> StoreResult<Option<codec::Head>> {
    let row = tx.opt(
        "SELECT seq, hash, frontier FROM audit_head WHERE id = 1 FOR UPDATE",
        &[],
        |r| {
            Ok((
                r.get::<i64>(0)?,
                r.get::<Vec<u8>>(1)?,
                r.get::<Option<Vec<u8>>>(2)?,
            ))
        },
    )?;
    let Some((seq, hash, frontier)) = row else {
        return Ok(None);
    };
    let mut rebuild = || {
        let mut f = airlock_core::merkle::Frontier::new();
        tx.query(
            "SELECT body FROM audit_events ORDER BY seq",
            &[],
            &mut |r| {
                f.push_body(r.get::<&[u8]>(0)?);
                Ok(())
            },
        )?;
        Ok(f)
    };
    codec::Head::decode(seq, &hash, frontier.as_deref(), &mut rebuild).map(Some)
}

fn insert_checkpoint(tx: &mut dyn Tx, cp: &Checkpoint) -> StoreResult<()> {
    // Two replicas (or a due checkpoint and the background task) signing one size are both right.
    tx.execute(
        "INSERT INTO audit_checkpoints (seq, hash, signature, note) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (seq) DO NOTHING",
        params![
            cp.seq as i64,
            &cp.hash[..],
            &cp.signature[..],
            cp.note.as_deref()
        ],
    )?;
    Ok(())
}

/// Extends the chain inside `tx`; the caller's commit makes events and effect durable together.
/// Events per multi-row insert (3 parameters each; far below either
/// database's parameter limit).
const INSERT_CHUNK: usize = 250;

static INSERT_MANY: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    let rows: Vec<String> = (0..INSERT_CHUNK)
        .map(|i| format!("(${}, ${}, ${})", 3 * i + 1, 3 * i + 2, 3 * i + 3))
        .collect();
    format!(
        "INSERT INTO audit_events (seq, body, hash) VALUES {}",
        rows.join(", ")
    )
});

pub(crate) fn append(
    tx: &mut dyn Tx,
    signer: Option<&CheckpointSigner>,
    drafts: &[AuditDraft],
    now: OffsetDateTime,
) -> StoreResult<()> {
    if drafts.is_empty() {
        return Ok(());
    }
    let head = read_head(tx)?;
    let sealed = codec::seal_drafts(head, now, drafts, signer);
    // Full chunks go in one statement each: per-row statement overhead was a
    // measurable share of an append (bench 4d); the rest row by row, so only
    // two statement texts exist.
    let mut chunks = sealed.events.chunks_exact(INSERT_CHUNK);
    for chunk in &mut chunks {
        let args: Vec<Value<'_>> = chunk
            .iter()
            .flat_map(|e| {
                [
                    Value::Int(e.seq as i64),
                    Value::Blob(&e.body),
                    Value::Blob(&e.hash[..]),
                ]
            })
            .collect();
        tx.execute(&INSERT_MANY, &args)?;
    }
    for e in chunks.remainder() {
        tx.execute(
            "INSERT INTO audit_events (seq, body, hash) VALUES ($1, $2, $3)",
            params![e.seq as i64, &e.body, &e.hash[..]],
        )?;
    }
    for cp in &sealed.checkpoints {
        insert_checkpoint(tx, cp)?;
    }
    let frontier = sealed.frontier.encode();
    tx.execute(
        "INSERT INTO audit_head (id, seq, hash, frontier) VALUES (1, $1, $2, $3) \
         ON CONFLICT (id) DO UPDATE SET seq = excluded.seq, hash = excluded.hash, frontier = excluded.frontier",
        params![sealed.head_seq as i64, &sealed.head_hash[..], &frontier],
    )?;
    Ok(())
}

fn checkpoint(r: &dyn Row) -> StoreResult<Checkpoint> {
    let seq = codec::seq_u64(r.get(0)?, "checkpoint")?;
    Ok(Checkpoint {
        seq,
        hash: codec::hash32(r.get(1)?, "checkpoint hash")?,
        signature: codec::sig64(r.get(2)?, seq)?,
        note: r.get(3)?,
    })
}

/// Events with `seq > since`, oldest first, at most `limit`.
pub(crate) fn events(db: &impl Db, since: u64, limit: u32) -> StoreResult<Vec<SealedEvent>> {
    let since = i64::try_from(since).unwrap_or(i64::MAX);
    let limit = codec::effective_limit(limit, codec::MAX_AUDIT_PAGE);
    db.reader(|tx| {
        tx.rows(
            "SELECT seq, body, hash FROM audit_events WHERE seq > $1 ORDER BY seq LIMIT $2",
            params![since, limit],
            |r| {
                Ok(SealedEvent {
                    seq: codec::seq_u64(r.get(0)?, "audit event")?,
                    body: r.get(1)?,
                    hash: codec::hash32(r.get(2)?, "audit event hash")?,
                })
            },
        )
    })
}

/// Every event in order to `visit`, until it returns false.
// The closure type is `Store::audit_scan`'s, passed through.
#[allow(clippy::type_complexity)]
pub(crate) fn scan(
    db: &impl Db,
    visit: &mut dyn FnMut(u64, &[u8], &[u8]) -> bool,
) -> StoreResult<()> {
    db.scan(
        "SELECT seq, body, hash FROM audit_events ORDER BY seq",
        &mut |r| {
            let seq = codec::seq_u64(r.get(0)?, "audit event")?;
            Ok(visit(seq, r.get(1)?, r.get(2)?))
        },
    )
}

/// All checkpoints, oldest first.
pub(crate) fn checkpoints(db: &impl Db) -> StoreResult<Vec<Checkpoint>> {
    let sql = format!("SELECT {CHECKPOINT_COLUMNS} FROM audit_checkpoints ORDER BY seq");
    db.read(|tx| tx.rows(&sql, &[], checkpoint))
}

/// The newest signed tree head.
pub(crate) fn latest_checkpoint(db: &impl Db) -> StoreResult<Option<Checkpoint>> {
    let sql = format!(
        "SELECT {CHECKPOINT_COLUMNS} FROM audit_checkpoints WHERE note IS NOT NULL ORDER BY seq DESC LIMIT 1"
    );
    db.reader(|tx| tx.opt(&sql, &[], checkpoint))
}

/// Signed tree heads of size `> after`, oldest first, at most `limit`.
pub(crate) fn checkpoints_after(
    db: &impl Db,
    after: u64,
    limit: u32,
) -> StoreResult<Vec<Checkpoint>> {
    let sql = format!(
        "SELECT {CHECKPOINT_COLUMNS} FROM audit_checkpoints WHERE note IS NOT NULL AND seq > $1 ORDER BY seq LIMIT $2"
    );
    let after = i64::try_from(after).unwrap_or(i64::MAX);
    let limit = codec::effective_limit(limit, codec::MAX_AUDIT_PAGE);
    db.reader(|tx| tx.rows(&sql, params![after, limit], checkpoint))
}

/// Signs the head unless a checkpoint covers it already.
pub(crate) fn sign_head(db: &impl Db, now: OffsetDateTime) -> StoreResult<Option<Checkpoint>> {
    let Some(signer) = db.signer() else {
        return Ok(None);
    };
    db.write(|tx| {
        let Some(head) = read_head(tx)?.filter(|h| h.seq > 0) else {
            return Ok(None);
        };
        let latest: Option<i64> =
            tx.one("SELECT MAX(seq) FROM audit_checkpoints", &[], |r| r.get(0))?;
        if latest.is_some_and(|l| l >= head.seq as i64) {
            return Ok(None);
        }
        let cp = signer.sign_head(head.seq, &head.hash, &head.frontier.root(), now);
        insert_checkpoint(tx, &cp)?;
        Ok(Some(cp))
    })
}

/// The head's sequence number (`None` for an empty chain).
pub(crate) fn head(db: &impl Db) -> StoreResult<Option<u64>> {
    let seq: Option<i64> =
        db.read(|tx| tx.opt("SELECT seq FROM audit_head WHERE id = 1", &[], |r| r.get(0)))?;
    match seq {
        None | Some(0) => Ok(None),
        Some(s) => codec::seq_u64(s, "audit head").map(Some),
    }
}
