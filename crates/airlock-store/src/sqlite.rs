//! The embedded SQLite store (`airlock serve --dev`, single node). One writer
//! connection behind a mutex, `BEGIN IMMEDIATE` for every write so the audit
//! chain head is serialised even if another process opens the same file.

use std::path::Path;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use airlock_core::audit_chain::{AuditDraft, Checkpoint, CheckpointSigner, SealedEvent};
use airlock_core::request::{Request, RequestId, RequestState, Review};
use rusqlite::{params, Connection, OptionalExtension, Transaction, TransactionBehavior};
use time::OffsetDateTime;

use crate::codec::{self, RequestRow, ReviewRow, TokenRow, REQUEST_COLUMNS, TOKEN_COLUMNS};
use crate::{
    CertificateRecord, Change, RequestFilter, Store, StoreError, StoreResult, TokenRecord,
};

mod access;
mod notify;
mod runs;

/// Schema migrations, one file per version in `migrations/sqlite/`; entry
/// `i` moves the schema from version `i` to `i + 1`. Never edit an applied one.
const MIGRATIONS: &[&str] = &[
    include_str!("../migrations/sqlite/0001_init.sql"),
    include_str!("../migrations/sqlite/0002_certificates.sql"),
    include_str!("../migrations/sqlite/0003_runs.sql"),
    include_str!("../migrations/sqlite/0004_notify.sql"),
    include_str!("../migrations/sqlite/0005_identities_locks.sql"),
    include_str!("../migrations/sqlite/0006_transparency_log.sql"),
    include_str!("../migrations/sqlite/0007_secret_salt.sql"),
];

/// SQLite-backed [`Store`].
pub struct SqliteStore {
    conn: Mutex<Connection>,
    // A second connection so a long audit scan (WAL snapshot) never blocks writers.
    reader: Mutex<Connection>,
    signer: Option<CheckpointSigner>,
}

fn db(e: rusqlite::Error) -> StoreError {
    use rusqlite::Error as E;
    match e {
        E::FromSqlConversionFailure(..)
        | E::InvalidColumnType(..)
        | E::IntegralValueOutOfRange(..)
        | E::Utf8Error(_) => StoreError::Corrupt(e.to_string()),
        other => StoreError::Unavailable(other.to_string()),
    }
}

/// Reads a row selected with [`TOKEN_COLUMNS`].
fn token_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<TokenRow> {
    Ok(TokenRow {
        hash: r.get(0)?,
        user: r.get(1)?,
        groups: r.get(2)?,
        admin: r.get(3)?,
        created_by: r.get(4)?,
        created_at: r.get(5)?,
        expires_at: r.get(6)?,
        revoked: r.get(7)?,
        mfa: r.get(8)?,
        parent: r.get(9)?,
        last_used_at: r.get(10)?,
    })
}

fn is_unique_violation(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, _) if f.code == rusqlite::ErrorCode::ConstraintViolation
        && matches!(f.extended_code, rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY | rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE))
}

fn connect(path: &str) -> StoreResult<Connection> {
    let conn = Connection::open(path).map_err(|e| {
        StoreError::Unavailable(format!("cannot open SQLite database `{path}`: {e}"))
    })?;
    conn.busy_timeout(Duration::from_secs(5)).map_err(db)?;
    // FULL: a commit that returned is on disk, so an audit event cannot vanish on power loss.
    conn.execute_batch(
        "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON;",
    )
    .map_err(db)?;
    Ok(conn)
}

fn migrate(conn: &mut Connection) -> StoreResult<()> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(db)?;
    tx.execute_batch("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
        .map_err(db)?;
    let current: i64 = tx
        .query_row(
            "SELECT COALESCE(MAX(version), 0) FROM schema_version",
            [],
            |r| r.get(0),
        )
        .map_err(db)?;
    let current = usize::try_from(current)
        .map_err(|_| StoreError::Corrupt(format!("schema version {current}")))?;
    if current > MIGRATIONS.len() {
        return Err(StoreError::Unavailable(format!(
            "database schema version {current} is newer than this airlock ({}); upgrade airlock",
            MIGRATIONS.len()
        )));
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(current) {
        tx.execute_batch(sql)
            .map_err(|e| StoreError::Unavailable(format!("migration {} failed: {e}", i + 1)))?;
        tx.execute(
            "INSERT INTO schema_version (version) VALUES (?1)",
            [i as i64 + 1],
        )
        .map_err(db)?;
    }
    tx.commit().map_err(db)
}

fn read_request_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<RequestRow> {
    Ok(RequestRow {
        id: r.get(0)?,
        entitlement: r.get(1)?,
        requester: r.get(2)?,
        reason: r.get(3)?,
        state: r.get(4)?,
        requested_duration: r.get(5)?,
        not_before: r.get(6)?,
        not_after: r.get(7)?,
        breakglass: r.get(8)?,
        post_review_closed: r.get(9)?,
        grant_phase: r.get(10)?,
        grant_attempts: r.get(11)?,
        grant_last_error: r.get(12)?,
        grant_next_attempt_at: r.get(13)?,
        created_at: r.get(14)?,
        updated_at: r.get(15)?,
        secret_salt: r.get(16)?,
    })
}

fn load_reviews(conn: &Connection, id: &str) -> StoreResult<Vec<Review>> {
    let mut stmt = conn
        .prepare_cached(
            "SELECT reviewer, decision, comment, at FROM reviews WHERE request_id = ?1 ORDER BY id",
        )
        .map_err(db)?;
    let rows = stmt
        .query_map([id], |r| {
            Ok(ReviewRow {
                reviewer: r.get(0)?,
                decision: r.get(1)?,
                comment: r.get(2)?,
                at: r.get(3)?,
            })
        })
        .map_err(db)?;
    rows.map(|r| r.map_err(db).and_then(ReviewRow::decode))
        .collect()
}

fn with_reviews(conn: &Connection, rows: Vec<RequestRow>) -> StoreResult<Vec<Request>> {
    rows.into_iter()
        .map(|row| {
            let reviews = load_reviews(conn, &row.id)?;
            row.decode(reviews)
        })
        .collect()
}

fn load_request(conn: &Connection, id: &str) -> StoreResult<Option<Request>> {
    let row = conn
        .prepare_cached(&format!(
            "SELECT {REQUEST_COLUMNS} FROM requests WHERE id = ?1"
        ))
        .map_err(db)?
        .query_row([id], read_request_row)
        .optional()
        .map_err(db)?;
    row.map(|row| {
        let reviews = load_reviews(conn, &row.id)?;
        row.decode(reviews)
    })
    .transpose()
}

fn insert_review(tx: &Transaction<'_>, id: &RequestId, review: &Review) -> StoreResult<()> {
    tx.prepare_cached("INSERT INTO reviews (request_id, reviewer, decision, comment, at) VALUES (?1, ?2, ?3, ?4, ?5)")
        .map_err(db)?
        .execute(params![
            id.as_str(),
            review.reviewer.as_str(),
            review.decision.as_str(),
            review.comment,
            codec::micros(review.at)
        ])
        .map_err(|e| {
            if is_unique_violation(&e) {
                StoreError::Duplicate(format!("review by `{}` on request `{id}`", review.reviewer))
            } else {
                db(e)
            }
        })?;
    Ok(())
}

/// Reads and locks (the write transaction is IMMEDIATE) the chain head.
fn read_head(tx: &Transaction<'_>) -> StoreResult<Option<codec::Head>> {
    type Row = (i64, Vec<u8>, Option<Vec<u8>>);
    let row: Option<Row> = tx
        .query_row(
            "SELECT seq, hash, frontier FROM audit_head WHERE id = 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .optional()
        .map_err(db)?;
    let Some((seq, hash, frontier)) = row else {
        return Ok(None);
    };
    let mut rebuild = || {
        let mut f = airlock_core::merkle::Frontier::new();
        let mut stmt = tx
            .prepare("SELECT body FROM audit_events ORDER BY seq")
            .map_err(db)?;
        let mut rows = stmt.query([]).map_err(db)?;
        while let Some(r) = rows.next().map_err(db)? {
            f.push_body(
                r.get_ref(0)
                    .map_err(db)?
                    .as_blob()
                    .map_err(|e| db(e.into()))?,
            );
        }
        Ok(f)
    };
    codec::Head::decode(seq, &hash, frontier.as_deref(), &mut rebuild).map(Some)
}

fn insert_checkpoint(tx: &Transaction<'_>, cp: &Checkpoint) -> StoreResult<()> {
    // Two signers of the same size (a due checkpoint and the background task) are both right.
    tx.prepare_cached(
        "INSERT INTO audit_checkpoints (seq, hash, signature, note) VALUES (?1, ?2, ?3, ?4) \
         ON CONFLICT (seq) DO NOTHING",
    )
    .map_err(db)?
    .execute(params![
        cp.seq as i64,
        &cp.hash[..],
        &cp.signature[..],
        cp.note
    ])
    .map_err(db)?;
    Ok(())
}

/// Extends the chain inside `tx`; the caller's commit makes events and effect durable together.
fn append_audit_tx(
    tx: &Transaction<'_>,
    signer: Option<&CheckpointSigner>,
    drafts: &[AuditDraft],
    now: OffsetDateTime,
) -> StoreResult<()> {
    if drafts.is_empty() {
        return Ok(());
    }
    let head = read_head(tx)?;
    let sealed = codec::seal_drafts(head, now, drafts, signer);
    let mut insert = tx
        .prepare_cached("INSERT INTO audit_events (seq, body, hash) VALUES (?1, ?2, ?3)")
        .map_err(db)?;
    for e in &sealed.events {
        insert
            .execute(params![e.seq as i64, e.body, &e.hash[..]])
            .map_err(db)?;
    }
    for cp in &sealed.checkpoints {
        insert_checkpoint(tx, cp)?;
    }
    tx.prepare_cached(
        "INSERT INTO audit_head (id, seq, hash, frontier) VALUES (1, ?1, ?2, ?3) \
         ON CONFLICT (id) DO UPDATE SET seq = excluded.seq, hash = excluded.hash, frontier = excluded.frontier",
    )
    .map_err(db)?
    .execute(params![
        sealed.head_seq as i64,
        &sealed.head_hash[..],
        sealed.frontier.encode()
    ])
    .map_err(db)?;
    Ok(())
}

fn read_checkpoints(conn: &Connection, sql: &str, args: &[i64]) -> StoreResult<Vec<Checkpoint>> {
    let mut stmt = conn.prepare_cached(sql).map_err(db)?;
    let mut rows = stmt
        .query(rusqlite::params_from_iter(args.iter()))
        .map_err(db)?;
    let mut out = Vec::new();
    while let Some(r) = rows.next().map_err(db)? {
        let seq = codec::seq_u64(r.get(0).map_err(db)?, "checkpoint")?;
        let hash: Vec<u8> = r.get(1).map_err(db)?;
        let sig: Vec<u8> = r.get(2).map_err(db)?;
        out.push(Checkpoint {
            seq,
            hash: codec::hash32(&hash, "checkpoint hash")?,
            signature: codec::sig64(&sig, seq)?,
            note: r.get(3).map_err(db)?,
        });
    }
    Ok(out)
}

impl SqliteStore {
    /// Opens (creating it and its directory if missing) and migrates the database at `path`.
    pub fn open(path: &str, signer: Option<CheckpointSigner>) -> StoreResult<SqliteStore> {
        if let Some(dir) = Path::new(path)
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
        {
            std::fs::create_dir_all(dir).map_err(|e| {
                StoreError::Unavailable(format!("cannot create directory `{}`: {e}", dir.display()))
            })?;
        }
        let mut conn = connect(path)?;
        migrate(&mut conn)?;
        let reader = connect(path)?;
        Ok(SqliteStore {
            conn: Mutex::new(conn),
            reader: Mutex::new(reader),
            signer,
        })
    }

    fn conn(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock leaves no open transaction behind
        // (rusqlite rolls back on drop), so the connection is still usable.
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn write<T>(&self, f: impl FnOnce(&Transaction<'_>) -> StoreResult<T>) -> StoreResult<T> {
        let mut conn = self.conn();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(db)?;
        let out = f(&tx)?;
        tx.commit().map_err(db)?;
        Ok(out)
    }
}

impl Store for SqliteStore {
    fn create_request(
        &self,
        request: &Request,
        lapses_at: OffsetDateTime,
        audit: &[AuditDraft],
        now: OffsetDateTime,
    ) -> StoreResult<()> {
        self.write(|tx| {
            let r = request;
            tx.prepare_cached(&format!(
                "INSERT INTO requests ({REQUEST_COLUMNS}, lapses_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18)"
            ))
            .map_err(db)?
            .execute(params![
                r.id.as_str(),
                r.entitlement.as_str(),
                r.requester.as_str(),
                r.reason,
                r.state.as_str(),
                r.requested_duration.as_secs() as i64,
                r.not_before.map(codec::micros),
                r.not_after.map(codec::micros),
                r.breakglass,
                r.post_review_closed,
                r.grant.phase.as_str(),
                i64::from(r.grant.attempts),
                r.grant.last_error,
                r.grant.next_attempt_at.map(codec::micros),
                codec::micros(r.created_at),
                codec::micros(r.updated_at),
                r.secret_salt,
                codec::micros(lapses_at),
            ])
            .map_err(|e| if is_unique_violation(&e) { StoreError::Duplicate(format!("request `{}`", r.id)) } else { db(e) })?;
            for review in &r.reviews {
                insert_review(tx, &r.id, review)?;
            }
            append_audit_tx(tx, self.signer.as_ref(), audit, now)
        })
    }

    fn get_request(&self, id: &RequestId) -> StoreResult<Option<Request>> {
        load_request(&self.conn(), id.as_str())
    }

    fn list_requests(&self, filter: &RequestFilter) -> StoreResult<Vec<Request>> {
        let mut sql = format!("SELECT {REQUEST_COLUMNS} FROM requests WHERE 1 = 1");
        let mut args: Vec<Box<dyn rusqlite::ToSql>> = Vec::new();
        if let Some(state) = filter.state {
            args.push(Box::new(state.as_str()));
            sql.push_str(&format!(" AND state = ?{}", args.len()));
        }
        if let Some(requester) = &filter.requester {
            args.push(Box::new(requester.as_str().to_owned()));
            sql.push_str(&format!(" AND requester = ?{}", args.len()));
        }
        if let Some(ents) = &filter.entitlements {
            // One JSON parameter instead of a variable-length IN list keeps the statement cacheable.
            args.push(Box::new(serde_json::Value::from(ents.clone()).to_string()));
            sql.push_str(&format!(
                " AND entitlement IN (SELECT value FROM json_each(?{}))",
                args.len()
            ));
        }
        if filter.open_post_review {
            sql.push_str(" AND breakglass = 1 AND post_review_closed = 0");
        }
        if let Some((user, ents)) = &filter.visible_to {
            args.push(Box::new(user.as_str().to_owned()));
            args.push(Box::new(serde_json::Value::from(ents.clone()).to_string()));
            sql.push_str(&format!(
                " AND (requester = ?{} OR entitlement IN (SELECT value FROM json_each(?{})))",
                args.len() - 1,
                args.len()
            ));
        }
        if let Some((at, id)) = &filter.after {
            args.push(Box::new(codec::micros(*at)));
            args.push(Box::new(id.as_str().to_owned()));
            sql.push_str(&format!(
                " AND (created_at < ?{0} OR (created_at = ?{0} AND id > ?{1}))",
                args.len() - 1,
                args.len()
            ));
        }
        args.push(Box::new(codec::effective_limit(
            filter.limit,
            codec::MAX_LIST_LIMIT,
        )));
        sql.push_str(&format!(
            " ORDER BY created_at DESC, id LIMIT ?{}",
            args.len()
        ));
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(&sql).map_err(db)?;
        let rows = stmt
            .query_map(rusqlite::params_from_iter(args.iter()), read_request_row)
            .map_err(db)?
            .collect::<rusqlite::Result<Vec<_>>>()
            .map_err(db)?;
        with_reviews(&conn, rows)
    }

    fn update_request(
        &self,
        id: &RequestId,
        now: OffsetDateTime,
        decide: &mut dyn FnMut(&Request) -> Result<Change, airlock_core::Error>,
    ) -> StoreResult<Request> {
        let mut conn = self.conn();
        // IMMEDIATE takes the write lock before reading, so `decide` sees the row as it will be written over.
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(db)?;
        let current = load_request(&tx, id.as_str())?.ok_or_else(|| codec::not_found(id))?;
        let change = decide(&current)?;
        if change.is_empty() {
            return Ok(current);
        }
        let mut next = current;
        change.apply_to(&mut next);
        tx.prepare_cached(
            "UPDATE requests SET state = ?2, not_before = ?3, not_after = ?4, post_review_closed = ?5, \
             grant_phase = ?6, grant_attempts = ?7, grant_last_error = ?8, grant_next_attempt_at = ?9, updated_at = ?10, \
             lease_owner = CASE WHEN ?11 THEN NULL ELSE lease_owner END, \
             lease_until = CASE WHEN ?11 THEN NULL ELSE lease_until END \
             WHERE id = ?1",
        )
        .map_err(db)?
        .execute(params![
            id.as_str(),
            next.state.as_str(),
            next.not_before.map(codec::micros),
            next.not_after.map(codec::micros),
            next.post_review_closed,
            next.grant.phase.as_str(),
            i64::from(next.grant.attempts),
            next.grant.last_error,
            next.grant.next_attempt_at.map(codec::micros),
            codec::micros(now),
            change.release_lease,
        ])
        .map_err(db)?;
        if let Some(review) = &change.review {
            insert_review(&tx, id, review)?;
        }
        append_audit_tx(&tx, self.signer.as_ref(), &change.audit, now)?;
        let updated = load_request(&tx, id.as_str())?.ok_or_else(|| codec::not_found(id))?;
        tx.commit().map_err(db)?;
        Ok(updated)
    }

    fn claim_work(
        &self,
        now: OffsetDateTime,
        owner: &str,
        lease: time::Duration,
        limit: u32,
    ) -> StoreResult<Vec<Request>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let sql = format!(
            "UPDATE requests SET lease_owner = ?2, lease_until = ?3 WHERE id IN (\
             SELECT id FROM requests WHERE (lease_until IS NULL OR lease_until <= ?1) AND {} \
             ORDER BY created_at, id LIMIT ?4) RETURNING {REQUEST_COLUMNS}",
            codec::due_condition("?1")
        );
        let until = codec::micros(now.saturating_add(lease));
        let mut conn = self.conn();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(db)?;
        let mut rows = tx
            .prepare_cached(&sql)
            .map_err(db)?
            .query_map(
                params![codec::micros(now), owner, until, i64::from(limit)],
                read_request_row,
            )
            .map_err(db)?
            .collect::<rusqlite::Result<Vec<_>>>()
            .map_err(db)?;
        // RETURNING has no defined order; hand work out oldest first.
        rows.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        let out = with_reviews(&tx, rows)?;
        tx.commit().map_err(db)?;
        Ok(out)
    }

    fn next_due(&self) -> StoreResult<Option<OffsetDateTime>> {
        let due: Option<i64> = self
            .conn()
            .query_row(codec::NEXT_DUE_SQL, [], |r| r.get(0))
            .map_err(db)?;
        due.map(|us| codec::from_micros(us, "next due")).transpose()
    }

    fn append_audit(&self, audit: &[AuditDraft], now: OffsetDateTime) -> StoreResult<()> {
        self.write(|tx| append_audit_tx(tx, self.signer.as_ref(), audit, now))
    }

    fn audit_events(&self, since: u64, limit: u32) -> StoreResult<Vec<SealedEvent>> {
        let since = i64::try_from(since).unwrap_or(i64::MAX);
        let conn = self.reader.lock().unwrap_or_else(|p| p.into_inner());
        let mut stmt = conn
            .prepare_cached(
                "SELECT seq, body, hash FROM audit_events WHERE seq > ?1 ORDER BY seq LIMIT ?2",
            )
            .map_err(db)?;
        let mut rows = stmt
            .query(params![
                since,
                codec::effective_limit(limit, codec::MAX_AUDIT_PAGE)
            ])
            .map_err(db)?;
        let mut out = Vec::new();
        while let Some(r) = rows.next().map_err(db)? {
            let seq = codec::seq_u64(r.get(0).map_err(db)?, "audit event")?;
            let hash = codec::hash32(
                r.get_ref(2)
                    .map_err(db)?
                    .as_blob()
                    .map_err(|e| db(e.into()))?,
                "audit event hash",
            )?;
            out.push(SealedEvent {
                seq,
                body: r.get(1).map_err(db)?,
                hash,
            });
        }
        Ok(out)
    }

    fn audit_scan(&self, visit: &mut dyn FnMut(u64, &[u8], &[u8]) -> bool) -> StoreResult<()> {
        let conn = self.reader.lock().unwrap_or_else(|p| p.into_inner());
        let mut stmt = conn
            .prepare_cached("SELECT seq, body, hash FROM audit_events ORDER BY seq")
            .map_err(db)?;
        let mut rows = stmt.query([]).map_err(db)?;
        // Borrowed blobs: no per-row allocation beyond SQLite's own page cache.
        while let Some(r) = rows.next().map_err(db)? {
            let seq = codec::seq_u64(r.get(0).map_err(db)?, "audit event")?;
            let body = r
                .get_ref(1)
                .map_err(db)?
                .as_blob()
                .map_err(|e| db(e.into()))?;
            let hash = r
                .get_ref(2)
                .map_err(db)?
                .as_blob()
                .map_err(|e| db(e.into()))?;
            if !visit(seq, body, hash) {
                break;
            }
        }
        Ok(())
    }

    fn audit_checkpoints(&self) -> StoreResult<Vec<Checkpoint>> {
        read_checkpoints(
            &self.conn(),
            "SELECT seq, hash, signature, note FROM audit_checkpoints ORDER BY seq",
            &[],
        )
    }

    fn audit_latest_checkpoint(&self) -> StoreResult<Option<Checkpoint>> {
        Ok(read_checkpoints(
            &self.reader.lock().unwrap_or_else(|p| p.into_inner()),
            "SELECT seq, hash, signature, note FROM audit_checkpoints WHERE note IS NOT NULL ORDER BY seq DESC LIMIT 1",
            &[],
        )?
        .pop())
    }

    fn audit_checkpoints_after(&self, after: u64, limit: u32) -> StoreResult<Vec<Checkpoint>> {
        read_checkpoints(
            &self.reader.lock().unwrap_or_else(|p| p.into_inner()),
            "SELECT seq, hash, signature, note FROM audit_checkpoints WHERE note IS NOT NULL AND seq > ?1 ORDER BY seq LIMIT ?2",
            &[
                i64::try_from(after).unwrap_or(i64::MAX),
                codec::effective_limit(limit, codec::MAX_AUDIT_PAGE),
            ],
        )
    }

    fn audit_sign_head(&self, now: OffsetDateTime) -> StoreResult<Option<Checkpoint>> {
        let Some(signer) = self.signer.as_ref() else {
            return Ok(None);
        };
        self.write(|tx| {
            let Some(head) = read_head(tx)?.filter(|h| h.seq > 0) else {
                return Ok(None);
            };
            let latest: Option<i64> = tx
                .query_row("SELECT MAX(seq) FROM audit_checkpoints", [], |r| r.get(0))
                .map_err(db)?;
            if latest.is_some_and(|l| l >= head.seq as i64) {
                return Ok(None);
            }
            let cp = signer.sign_head(head.seq, &head.hash, &head.frontier.root(), now);
            insert_checkpoint(tx, &cp)?;
            Ok(Some(cp))
        })
    }

    fn audit_head(&self) -> StoreResult<Option<u64>> {
        let seq: Option<i64> = self
            .conn()
            .query_row("SELECT seq FROM audit_head WHERE id = 1", [], |r| r.get(0))
            .optional()
            .map_err(db)?;
        match seq {
            None | Some(0) => Ok(None),
            Some(s) => codec::seq_u64(s, "audit head").map(Some),
        }
    }

    fn insert_token(
        &self,
        token: &TokenRecord,
        audit: &AuditDraft,
        now: OffsetDateTime,
    ) -> StoreResult<()> {
        self.write(|tx| {
            tx.prepare_cached(&format!(
                "INSERT INTO tokens ({TOKEN_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, NULL)"
            ))
            .map_err(db)?
            .execute(params![
                &token.hash[..],
                token.user.as_str(),
                codec::encode_groups(&token.groups),
                token.admin,
                token.created_by,
                codec::micros(token.created_at),
                codec::micros(token.expires_at),
                token.revoked,
                token.mfa,
                token.parent.as_ref().map(|p| &p[..]),
            ])
            .map_err(|e| {
                if is_unique_violation(&e) {
                    StoreError::Duplicate("token".into())
                } else {
                    db(e)
                }
            })?;
            append_audit_tx(tx, self.signer.as_ref(), std::slice::from_ref(audit), now)
        })
    }

    fn revoke_token(
        &self,
        hash: &[u8; 32],
        audit: &AuditDraft,
        now: OffsetDateTime,
    ) -> StoreResult<bool> {
        self.write(|tx| {
            let n = tx
                .prepare_cached("UPDATE tokens SET revoked = 1 WHERE hash = ?1 AND revoked = 0")
                .map_err(db)?
                .execute(params![&hash[..]])
                .map_err(db)?;
            if n == 1 {
                let sessions = tx
                    .prepare_cached(
                        "UPDATE tokens SET revoked = 1 WHERE parent = ?1 AND revoked = 0",
                    )
                    .map_err(db)?
                    .execute(params![&hash[..]])
                    .map_err(db)?;
                let audit = codec::with_sessions_ended(audit, sessions);
                append_audit_tx(tx, self.signer.as_ref(), std::slice::from_ref(&audit), now)?;
            }
            Ok(n == 1)
        })
    }

    fn find_token(&self, hash: &[u8; 32]) -> StoreResult<Option<TokenRecord>> {
        let row = self
            .conn()
            .prepare_cached(&format!(
                "SELECT {TOKEN_COLUMNS} FROM tokens WHERE hash = ?1"
            ))
            .map_err(db)?
            .query_row([&hash[..]], token_row)
            .optional()
            .map_err(db)?;
        row.map(TokenRow::decode).transpose()
    }

    fn count_by_state(&self) -> StoreResult<Vec<(RequestState, u64)>> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached("SELECT state, COUNT(*) FROM requests GROUP BY state")
            .map_err(db)?;
        let rows = stmt
            .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))
            .map_err(db)?
            .collect::<rusqlite::Result<Vec<_>>>()
            .map_err(db)?;
        codec::counts(rows)
    }

    fn count_open_post_reviews(&self) -> StoreResult<u64> {
        let n: i64 = self
            .conn()
            .prepare_cached(
                "SELECT COUNT(*) FROM requests WHERE breakglass = 1 AND post_review_closed = 0",
            )
            .map_err(db)?
            .query_row([], |r| r.get(0))
            .map_err(db)?;
        Ok(n.max(0) as u64)
    }

    fn issue_certificate(
        &self,
        cert: &CertificateRecord,
        audit: &mut dyn FnMut(u64) -> AuditDraft,
        now: OffsetDateTime,
    ) -> StoreResult<u64> {
        self.write(|tx| {
            tx.prepare_cached(
                "INSERT INTO certificates (provider, request_id, key_id, valid_before, issued_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )
            .map_err(db)?
            .execute(params![
                cert.provider,
                cert.request_id.as_str(),
                cert.key_id,
                codec::micros(cert.valid_before),
                codec::micros(now),
            ])
            .map_err(db)?;
            let serial = u64::try_from(tx.last_insert_rowid())
                .map_err(|_| StoreError::Corrupt("negative certificate serial".into()))?;
            append_audit_tx(tx, self.signer.as_ref(), &[audit(serial)], now)?;
            Ok(serial)
        })
    }

    fn revoked_certificates(&self, provider: &str, now: OffsetDateTime) -> StoreResult<Vec<u64>> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached(
                "SELECT c.serial FROM certificates c JOIN requests r ON r.id = c.request_id \
                 WHERE c.provider = ?1 AND c.valid_before > ?2 AND r.state <> 'active' \
                 ORDER BY c.serial",
            )
            .map_err(db)?;
        let rows = stmt
            .query_map(params![provider, codec::micros(now)], |row| {
                row.get::<_, i64>(0)
            })
            .map_err(db)?;
        rows.map(|r| {
            r.map_err(db).and_then(|v| {
                u64::try_from(v).map_err(|_| StoreError::Corrupt("negative serial".into()))
            })
        })
        .collect()
    }

    fn ping(&self) -> StoreResult<()> {
        self.conn()
            .query_row("SELECT 1", [], |_| Ok(()))
            .map_err(db)
    }
}
