//! The PostgreSQL store, shared by several `airlock serve` replicas. Row locks
//! serialise each request and the audit chain head; background work is claimed
//! with `FOR UPDATE SKIP LOCKED` so two replicas never work on the same row.

use std::collections::HashMap;
use std::str::FromStr;
use std::time::Duration;

use airlock_core::audit_chain::{AuditDraft, Checkpoint, CheckpointSigner, SealedEvent};
use airlock_core::request::{Request, RequestId, RequestState, Review};
use postgres::error::SqlState;
use postgres::types::ToSql;
use postgres::{Client, Config, GenericClient, NoTls, Row, Transaction};
use r2d2_postgres::PostgresConnectionManager;
use time::OffsetDateTime;

use crate::codec::{self, RequestRow, ReviewRow, TokenRow, REQUEST_COLUMNS, TOKEN_COLUMNS};
use crate::{
    CertificateRecord, Change, RequestFilter, Store, StoreError, StoreResult, TokenRecord,
};

/// Most connections one store opens.
const MAX_CONNECTIONS: u32 = 16;
/// How long a caller waits for a free connection before giving up.
const CHECKOUT_TIMEOUT: Duration = Duration::from_secs(10);
/// Rows fetched per round trip by `audit_scan`: bounds memory on huge chains.
const SCAN_CHUNK: i32 = 10_000;

mod access;
mod notify;
mod runs;

/// Schema migrations, one file per version in `migrations/postgres/`; entry
/// `i` moves the schema from version `i` to `i + 1`. Never edit an applied one.
/// Tables are unqualified so they land in the connection's `search_path`.
const MIGRATIONS: &[&str] = &[
    include_str!("../migrations/postgres/0001_init.sql"),
    include_str!("../migrations/postgres/0002_certificates.sql"),
    include_str!("../migrations/postgres/0003_runs.sql"),
    include_str!("../migrations/postgres/0004_notify.sql"),
    include_str!("../migrations/postgres/0005_identities_locks.sql"),
    include_str!("../migrations/postgres/0006_transparency_log.sql"),
    include_str!("../migrations/postgres/0007_secret_salt.sql"),
];

fn db(e: postgres::Error) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

/// A column that does not decode is bad data, not a bad connection.
/// Reads a row selected with [`TOKEN_COLUMNS`].
fn token_row(r: &postgres::Row) -> StoreResult<TokenRow> {
    Ok(TokenRow {
        hash: r.try_get(0).map_err(col)?,
        user: r.try_get(1).map_err(col)?,
        groups: r.try_get(2).map_err(col)?,
        admin: r.try_get(3).map_err(col)?,
        created_by: r.try_get(4).map_err(col)?,
        created_at: r.try_get(5).map_err(col)?,
        expires_at: r.try_get(6).map_err(col)?,
        revoked: r.try_get(7).map_err(col)?,
        mfa: r.try_get(8).map_err(col)?,
        parent: r.try_get(9).map_err(col)?,
        last_used_at: r.try_get(10).map_err(col)?,
    })
}

fn col(e: postgres::Error) -> StoreError {
    StoreError::Corrupt(e.to_string())
}

fn is_unique_violation(e: &postgres::Error) -> bool {
    e.code() == Some(&SqlState::UNIQUE_VIOLATION)
}

/// Connections opened on demand (at most [`MAX_CONNECTIONS`]); one found
/// closed on return is dropped, and no test query runs on checkout (a broken
/// one fails its statement).
struct Pool(r2d2::Pool<PostgresConnectionManager<NoTls>>);

impl Pool {
    fn get(&self) -> StoreResult<r2d2::PooledConnection<PostgresConnectionManager<NoTls>>> {
        self.0.get().map_err(|e| {
            StoreError::Unavailable(format!(
                "no PostgreSQL connection within {}s (at most {MAX_CONNECTIONS}): {e}",
                CHECKOUT_TIMEOUT.as_secs()
            ))
        })
    }
}

/// PostgreSQL-backed [`Store`].
pub struct PgStore {
    pool: Pool,
    signer: Option<CheckpointSigner>,
}

fn read_request_row(r: &Row) -> Result<RequestRow, postgres::Error> {
    Ok(RequestRow {
        id: r.try_get(0)?,
        entitlement: r.try_get(1)?,
        requester: r.try_get(2)?,
        reason: r.try_get(3)?,
        state: r.try_get(4)?,
        requested_duration: r.try_get(5)?,
        not_before: r.try_get(6)?,
        not_after: r.try_get(7)?,
        breakglass: r.try_get(8)?,
        post_review_closed: r.try_get(9)?,
        grant_phase: r.try_get(10)?,
        grant_attempts: r.try_get(11)?,
        grant_last_error: r.try_get(12)?,
        grant_next_attempt_at: r.try_get(13)?,
        created_at: r.try_get(14)?,
        updated_at: r.try_get(15)?,
        secret_salt: r.try_get(16)?,
    })
}

fn request_rows(rows: &[Row]) -> StoreResult<Vec<RequestRow>> {
    rows.iter()
        .map(|r| read_request_row(r).map_err(col))
        .collect()
}

/// Decodes rows and attaches their reviews, fetched in one query.
fn with_reviews(c: &mut impl GenericClient, rows: Vec<RequestRow>) -> StoreResult<Vec<Request>> {
    if rows.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<&str> = rows.iter().map(|r| r.id.as_str()).collect();
    let review_rows = c
        .query(
            "SELECT request_id, reviewer, decision, comment, at FROM reviews WHERE request_id = ANY($1) ORDER BY id",
            &[&ids],
        )
        .map_err(db)?;
    let mut by_id: HashMap<String, Vec<Review>> = HashMap::new();
    for r in &review_rows {
        let review = ReviewRow {
            reviewer: r.try_get(1).map_err(col)?,
            decision: r.try_get(2).map_err(col)?,
            comment: r.try_get(3).map_err(col)?,
            at: r.try_get(4).map_err(col)?,
        }
        .decode()?;
        by_id
            .entry(r.try_get(0).map_err(col)?)
            .or_default()
            .push(review);
    }
    rows.into_iter()
        .map(|row| {
            let reviews = by_id.remove(&row.id).unwrap_or_default();
            row.decode(reviews)
        })
        .collect()
}

fn load_request(c: &mut impl GenericClient, id: &str, lock: bool) -> StoreResult<Option<Request>> {
    let sql = format!(
        "SELECT {REQUEST_COLUMNS} FROM requests WHERE id = $1{}",
        if lock { " FOR UPDATE" } else { "" }
    );
    let rows = c.query(&sql, &[&id]).map_err(db)?;
    Ok(with_reviews(c, request_rows(&rows)?)?.pop())
}

fn insert_review(tx: &mut Transaction<'_>, id: &RequestId, review: &Review) -> StoreResult<()> {
    tx.execute(
        "INSERT INTO reviews (request_id, reviewer, decision, comment, at) VALUES ($1, $2, $3, $4, $5)",
        &[&id.as_str(), &review.reviewer.as_str(), &review.decision.as_str(), &review.comment, &codec::micros(review.at)],
    )
    .map_err(|e| {
        if is_unique_violation(&e) {
            StoreError::Duplicate(format!("review by `{}` on request `{id}`", review.reviewer))
        } else {
            db(e)
        }
    })?;
    Ok(())
}

/// Reads the chain head under its row lock (serialises appenders across replicas).
fn read_head(tx: &mut Transaction<'_>) -> StoreResult<Option<codec::Head>> {
    let Some(r) = tx
        .query_opt(
            "SELECT seq, hash, frontier FROM audit_head WHERE id = 1 FOR UPDATE",
            &[],
        )
        .map_err(db)?
    else {
        return Ok(None);
    };
    let seq: i64 = r.try_get(0).map_err(col)?;
    let hash: &[u8] = r.try_get(1).map_err(col)?;
    let frontier: Option<&[u8]> = r.try_get(2).map_err(col)?;
    let mut rebuild = || {
        let mut f = airlock_core::merkle::Frontier::new();
        for row in tx
            .query("SELECT body FROM audit_events ORDER BY seq", &[])
            .map_err(db)?
        {
            f.push_body(row.try_get::<_, &[u8]>(0).map_err(col)?);
        }
        Ok(f)
    };
    codec::Head::decode(seq, hash, frontier, &mut rebuild).map(Some)
}

fn insert_checkpoint(tx: &mut Transaction<'_>, cp: &Checkpoint) -> StoreResult<()> {
    // Two replicas (or a due checkpoint and the background task) signing one size are both right.
    tx.execute(
        "INSERT INTO audit_checkpoints (seq, hash, signature, note) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (seq) DO NOTHING",
        &[
            &(cp.seq as i64),
            &&cp.hash[..],
            &&cp.signature[..],
            &cp.note,
        ],
    )
    .map_err(db)?;
    Ok(())
}

/// Extends the chain inside `tx`. The head row lock serialises appenders across
/// replicas; it is taken after any request row lock, so lock order is fixed.
fn append_audit_tx(
    tx: &mut Transaction<'_>,
    signer: Option<&CheckpointSigner>,
    drafts: &[AuditDraft],
    now: OffsetDateTime,
) -> StoreResult<()> {
    if drafts.is_empty() {
        return Ok(());
    }
    let head = read_head(tx)?;
    let sealed = codec::seal_drafts(head, now, drafts, signer);
    let insert = tx
        .prepare("INSERT INTO audit_events (seq, body, hash) VALUES ($1, $2, $3)")
        .map_err(db)?;
    for e in &sealed.events {
        tx.execute(&insert, &[&(e.seq as i64), &e.body, &&e.hash[..]])
            .map_err(db)?;
    }
    for cp in &sealed.checkpoints {
        insert_checkpoint(tx, cp)?;
    }
    tx.execute(
        "INSERT INTO audit_head (id, seq, hash, frontier) VALUES (1, $1, $2, $3) \
         ON CONFLICT (id) DO UPDATE SET seq = excluded.seq, hash = excluded.hash, frontier = excluded.frontier",
        &[&(sealed.head_seq as i64), &&sealed.head_hash[..], &sealed.frontier.encode()],
    )
    .map_err(db)?;
    Ok(())
}

fn checkpoint_rows(rows: &[Row]) -> StoreResult<Vec<Checkpoint>> {
    rows.iter()
        .map(|r| {
            let seq = codec::seq_u64(r.try_get(0).map_err(col)?, "checkpoint")?;
            Ok(Checkpoint {
                seq,
                hash: codec::hash32(r.try_get(1).map_err(col)?, "checkpoint hash")?,
                signature: codec::sig64(r.try_get(2).map_err(col)?, seq)?,
                note: r.try_get(3).map_err(col)?,
            })
        })
        .collect()
}

fn migrate(client: &mut Client) -> StoreResult<()> {
    let mut tx = client.transaction().map_err(db)?;
    // Replicas starting together take turns; keyed by schema so per-test schemas do not wait on each other.
    tx.execute(
        "SELECT pg_advisory_xact_lock(hashtext('airlock-migrate:' || current_schema()))",
        &[],
    )
    .map_err(db)?;
    tx.batch_execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
        .map_err(db)?;
    let current: i32 = tx
        .query_one("SELECT COALESCE(MAX(version), 0) FROM schema_version", &[])
        .and_then(|r| r.try_get(0))
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
        tx.batch_execute(sql)
            .map_err(|e| StoreError::Unavailable(format!("migration {} failed: {e}", i + 1)))?;
        tx.execute(
            "INSERT INTO schema_version (version) VALUES ($1)",
            &[&(i as i32 + 1)],
        )
        .map_err(db)?;
    }
    tx.commit().map_err(db)
}

impl PgStore {
    /// Connects to `url` (a libpq-style URL; `?options=-csearch_path%3D...` selects a schema) and migrates.
    pub fn open(url: &str, signer: Option<CheckpointSigner>) -> StoreResult<PgStore> {
        let mut config = Config::from_str(url)
            .map_err(|e| StoreError::Unavailable(format!("invalid PostgreSQL URL: {e}")))?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(Duration::from_secs(5));
        }
        // Migrate on a connection of its own, so a bad URL or a down server fails at once.
        let mut client = config
            .connect(NoTls)
            .map_err(|e| StoreError::Unavailable(format!("cannot connect to PostgreSQL: {e}")))?;
        migrate(&mut client)?;
        let pool = r2d2::Pool::builder()
            .max_size(MAX_CONNECTIONS)
            .min_idle(Some(0))
            .connection_timeout(CHECKOUT_TIMEOUT)
            .test_on_check_out(false)
            .build_unchecked(PostgresConnectionManager::new(config, NoTls));
        let store = PgStore {
            pool: Pool(pool),
            signer,
        };
        Ok(store)
    }

    fn write<T>(&self, f: impl FnOnce(&mut Transaction<'_>) -> StoreResult<T>) -> StoreResult<T> {
        let mut conn = self.pool.get()?;
        let mut tx = conn.transaction().map_err(db)?;
        let out = f(&mut tx)?;
        tx.commit().map_err(db)?;
        Ok(out)
    }
}

impl Store for PgStore {
    fn create_request(
        &self,
        request: &Request,
        lapses_at: OffsetDateTime,
        audit: &[AuditDraft],
        now: OffsetDateTime,
    ) -> StoreResult<()> {
        self.write(|tx| {
            let r = request;
            tx.execute(
                &format!(
                    "INSERT INTO requests ({REQUEST_COLUMNS}, lapses_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18)"
                ),
                &[
                    &r.id.as_str(),
                    &r.entitlement.as_str(),
                    &r.requester.as_str(),
                    &r.reason,
                    &r.state.as_str(),
                    &(r.requested_duration.as_secs() as i64),
                    &r.not_before.map(codec::micros),
                    &r.not_after.map(codec::micros),
                    &r.breakglass,
                    &r.post_review_closed,
                    &r.grant.phase.as_str(),
                    &i64::from(r.grant.attempts),
                    &r.grant.last_error,
                    &r.grant.next_attempt_at.map(codec::micros),
                    &codec::micros(r.created_at),
                    &codec::micros(r.updated_at),
                    &r.secret_salt,
                    &codec::micros(lapses_at),
                ],
            )
            .map_err(|e| if is_unique_violation(&e) { StoreError::Duplicate(format!("request `{}`", r.id)) } else { db(e) })?;
            for review in &r.reviews {
                insert_review(tx, &r.id, review)?;
            }
            append_audit_tx(tx, self.signer.as_ref(), audit, now)
        })
    }

    fn get_request(&self, id: &RequestId) -> StoreResult<Option<Request>> {
        load_request(&mut *self.pool.get()?, id.as_str(), false)
    }

    fn list_requests(&self, filter: &RequestFilter) -> StoreResult<Vec<Request>> {
        let state = filter.state.map(RequestState::as_str);
        let requester = filter.requester.as_ref().map(|r| r.as_str());
        let limit = codec::effective_limit(filter.limit, codec::MAX_LIST_LIMIT);
        let mut sql = format!("SELECT {REQUEST_COLUMNS} FROM requests WHERE TRUE");
        let mut args: Vec<&(dyn ToSql + Sync)> = Vec::new();
        if let Some(s) = &state {
            args.push(s);
            sql.push_str(&format!(" AND state = ${}", args.len()));
        }
        if let Some(r) = &requester {
            args.push(r);
            sql.push_str(&format!(" AND requester = ${}", args.len()));
        }
        if let Some(ents) = &filter.entitlements {
            args.push(ents);
            sql.push_str(&format!(" AND entitlement = ANY(${})", args.len()));
        }
        if filter.open_post_review {
            sql.push_str(" AND breakglass AND NOT post_review_closed");
        }
        let visible = filter
            .visible_to
            .as_ref()
            .map(|(u, ents)| (u.as_str(), ents));
        if let Some((user, ents)) = &visible {
            args.push(user);
            args.push(*ents);
            sql.push_str(&format!(
                " AND (requester = ${} OR entitlement = ANY(${}))",
                args.len() - 1,
                args.len()
            ));
        }
        let after = filter
            .after
            .as_ref()
            .map(|(at, id)| (codec::micros(*at), id.as_str()));
        if let Some((at, id)) = &after {
            args.push(at);
            args.push(id);
            sql.push_str(&format!(
                " AND (created_at < ${0} OR (created_at = ${0} AND id > ${1}))",
                args.len() - 1,
                args.len()
            ));
        }
        args.push(&limit);
        sql.push_str(&format!(
            " ORDER BY created_at DESC, id LIMIT ${}",
            args.len()
        ));
        let mut conn = self.pool.get()?;
        let rows = conn.query(&sql, &args).map_err(db)?;
        with_reviews(&mut *conn, request_rows(&rows)?)
    }

    fn update_request(
        &self,
        id: &RequestId,
        now: OffsetDateTime,
        decide: &mut dyn FnMut(&Request) -> Result<Change, airlock_core::Error>,
    ) -> StoreResult<Request> {
        let mut conn = self.pool.get()?;
        let mut tx = conn.transaction().map_err(db)?;
        // FOR UPDATE: concurrent deciders on this request queue here and each sees the previous one's result.
        let current =
            load_request(&mut tx, id.as_str(), true)?.ok_or_else(|| codec::not_found(id))?;
        let change = decide(&current)?;
        if change.is_empty() {
            return Ok(current);
        }
        let mut next = current;
        change.apply_to(&mut next);
        tx.execute(
            "UPDATE requests SET state = $2, not_before = $3, not_after = $4, post_review_closed = $5, \
             grant_phase = $6, grant_attempts = $7, grant_last_error = $8, grant_next_attempt_at = $9, updated_at = $10, \
             lease_owner = CASE WHEN $11 THEN NULL ELSE lease_owner END, \
             lease_until = CASE WHEN $11 THEN NULL ELSE lease_until END \
             WHERE id = $1",
            &[
                &id.as_str(),
                &next.state.as_str(),
                &next.not_before.map(codec::micros),
                &next.not_after.map(codec::micros),
                &next.post_review_closed,
                &next.grant.phase.as_str(),
                &i64::from(next.grant.attempts),
                &next.grant.last_error,
                &next.grant.next_attempt_at.map(codec::micros),
                &codec::micros(now),
                &change.release_lease,
            ],
        )
        .map_err(db)?;
        if let Some(review) = &change.review {
            insert_review(&mut tx, id, review)?;
        }
        append_audit_tx(&mut tx, self.signer.as_ref(), &change.audit, now)?;
        let updated =
            load_request(&mut tx, id.as_str(), false)?.ok_or_else(|| codec::not_found(id))?;
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
        // SKIP LOCKED: rows another replica is claiming right now are left to it,
        // and a row it already claimed fails the lease test once its commit is seen.
        // MATERIALIZED: the locking subquery runs exactly once, so LIMIT holds
        // (an `IN (subquery)` may be re-planned as a join and rescanned).
        let sql = format!(
            "WITH due AS MATERIALIZED (\
             SELECT id FROM requests WHERE (lease_until IS NULL OR lease_until <= $1) AND {} \
             ORDER BY created_at, id LIMIT $4 FOR UPDATE SKIP LOCKED) \
             UPDATE requests SET lease_owner = $2, lease_until = $3 WHERE id IN (SELECT id FROM due) \
             RETURNING {REQUEST_COLUMNS}",
            codec::due_condition("$1")
        );
        let until = codec::micros(now.saturating_add(lease));
        self.write(|tx| {
            let rows = tx
                .query(
                    &sql,
                    &[&codec::micros(now), &owner, &until, &i64::from(limit)],
                )
                .map_err(db)?;
            let mut rows = request_rows(&rows)?;
            rows.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
            with_reviews(tx, rows)
        })
    }

    fn next_due(&self) -> StoreResult<Option<OffsetDateTime>> {
        let due: Option<i64> = self
            .pool
            .get()?
            .query_one(codec::NEXT_DUE_SQL, &[])
            .and_then(|r| r.try_get(0))
            .map_err(db)?;
        due.map(|us| codec::from_micros(us, "next due")).transpose()
    }

    fn append_audit(&self, audit: &[AuditDraft], now: OffsetDateTime) -> StoreResult<()> {
        self.write(|tx| append_audit_tx(tx, self.signer.as_ref(), audit, now))
    }

    fn audit_events(&self, since: u64, limit: u32) -> StoreResult<Vec<SealedEvent>> {
        let since = i64::try_from(since).unwrap_or(i64::MAX);
        let limit = codec::effective_limit(limit, codec::MAX_AUDIT_PAGE);
        let rows = self
            .pool
            .get()?
            .query(
                "SELECT seq, body, hash FROM audit_events WHERE seq > $1 ORDER BY seq LIMIT $2",
                &[&since, &limit],
            )
            .map_err(db)?;
        rows.iter()
            .map(|r| {
                let seq = codec::seq_u64(r.try_get(0).map_err(col)?, "audit event")?;
                Ok(SealedEvent {
                    seq,
                    body: r.try_get(1).map_err(col)?,
                    hash: codec::hash32(r.try_get(2).map_err(col)?, "audit event hash")?,
                })
            })
            .collect()
    }

    fn audit_scan(&self, visit: &mut dyn FnMut(u64, &[u8], &[u8]) -> bool) -> StoreResult<()> {
        let mut conn = self.pool.get()?;
        // A portal inside a read-only transaction: one consistent snapshot,
        // fetched in bounded chunks, and an early stop abandons the rest cheaply.
        let mut tx = conn
            .build_transaction()
            .read_only(true)
            .start()
            .map_err(db)?;
        let stmt = tx
            .prepare("SELECT seq, body, hash FROM audit_events ORDER BY seq")
            .map_err(db)?;
        let portal = tx.bind(&stmt, &[]).map_err(db)?;
        loop {
            let mut rows = tx.query_portal_raw(&portal, SCAN_CHUNK).map_err(db)?;
            let mut n = 0;
            while let Some(r) =
                postgres::fallible_iterator::FallibleIterator::next(&mut rows).map_err(db)?
            {
                n += 1;
                let seq = codec::seq_u64(r.try_get(0).map_err(col)?, "audit event")?;
                let body: &[u8] = r.try_get(1).map_err(col)?;
                let hash: &[u8] = r.try_get(2).map_err(col)?;
                if !visit(seq, body, hash) {
                    return Ok(());
                }
            }
            if n < SCAN_CHUNK {
                return Ok(());
            }
        }
    }

    fn audit_checkpoints(&self) -> StoreResult<Vec<Checkpoint>> {
        let rows = self
            .pool
            .get()?
            .query(
                "SELECT seq, hash, signature, note FROM audit_checkpoints ORDER BY seq",
                &[],
            )
            .map_err(db)?;
        checkpoint_rows(&rows)
    }

    fn audit_latest_checkpoint(&self) -> StoreResult<Option<Checkpoint>> {
        let rows = self
            .pool
            .get()?
            .query(
                "SELECT seq, hash, signature, note FROM audit_checkpoints WHERE note IS NOT NULL ORDER BY seq DESC LIMIT 1",
                &[],
            )
            .map_err(db)?;
        Ok(checkpoint_rows(&rows)?.pop())
    }

    fn audit_checkpoints_after(&self, after: u64, limit: u32) -> StoreResult<Vec<Checkpoint>> {
        let after = i64::try_from(after).unwrap_or(i64::MAX);
        let limit = codec::effective_limit(limit, codec::MAX_AUDIT_PAGE);
        let rows = self
            .pool
            .get()?
            .query(
                "SELECT seq, hash, signature, note FROM audit_checkpoints WHERE note IS NOT NULL AND seq > $1 ORDER BY seq LIMIT $2",
                &[&after, &limit],
            )
            .map_err(db)?;
        checkpoint_rows(&rows)
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
                .query_one("SELECT MAX(seq) FROM audit_checkpoints", &[])
                .and_then(|r| r.try_get(0))
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
        let row = self
            .pool
            .get()?
            .query_opt("SELECT seq FROM audit_head WHERE id = 1", &[])
            .map_err(db)?;
        match row
            .map(|r| r.try_get::<_, i64>(0))
            .transpose()
            .map_err(col)?
        {
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
            tx.execute(
                &format!(
                    "INSERT INTO tokens ({TOKEN_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, NULL)"
                ),
                &[
                    &&token.hash[..],
                    &token.user.as_str(),
                    &codec::encode_groups(&token.groups),
                    &token.admin,
                    &token.created_by,
                    &codec::micros(token.created_at),
                    &codec::micros(token.expires_at),
                    &token.revoked,
                    &token.mfa,
                    &token.parent.as_ref().map(|p| &p[..]),
                ],
            )
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
                .execute(
                    "UPDATE tokens SET revoked = true WHERE hash = $1 AND NOT revoked",
                    &[&&hash[..]],
                )
                .map_err(db)?;
            if n == 1 {
                let sessions = tx
                    .execute(
                        "UPDATE tokens SET revoked = true WHERE parent = $1 AND NOT revoked",
                        &[&&hash[..]],
                    )
                    .map_err(db)?;
                let audit = codec::with_sessions_ended(audit, sessions as usize);
                append_audit_tx(tx, self.signer.as_ref(), std::slice::from_ref(&audit), now)?;
            }
            Ok(n == 1)
        })
    }

    fn find_token(&self, hash: &[u8; 32]) -> StoreResult<Option<TokenRecord>> {
        let row = self
            .pool
            .get()?
            .query_opt(
                &format!("SELECT {TOKEN_COLUMNS} FROM tokens WHERE hash = $1"),
                &[&&hash[..]],
            )
            .map_err(db)?;
        row.map(|r| token_row(&r)?.decode()).transpose()
    }

    fn count_by_state(&self) -> StoreResult<Vec<(RequestState, u64)>> {
        let rows = self
            .pool
            .get()?
            .query("SELECT state, COUNT(*) FROM requests GROUP BY state", &[])
            .map_err(db)?;
        let rows = rows
            .iter()
            .map(|r| Ok((r.try_get(0).map_err(col)?, r.try_get(1).map_err(col)?)))
            .collect::<StoreResult<Vec<(String, i64)>>>()?;
        codec::counts(rows)
    }

    fn count_open_post_reviews(&self) -> StoreResult<u64> {
        let row = self
            .pool
            .get()?
            .query_one(
                "SELECT COUNT(*) FROM requests WHERE breakglass AND NOT post_review_closed",
                &[],
            )
            .map_err(db)?;
        let n: i64 = row.try_get(0).map_err(col)?;
        Ok(n.max(0) as u64)
    }

    fn issue_certificate(
        &self,
        cert: &CertificateRecord,
        audit: &mut dyn FnMut(u64) -> AuditDraft,
        now: OffsetDateTime,
    ) -> StoreResult<u64> {
        self.write(|tx| {
            let row = tx
                .query_one(
                    "INSERT INTO certificates (provider, request_id, key_id, valid_before, issued_at) \
                     VALUES ($1, $2, $3, $4, $5) RETURNING serial",
                    &[
                        &cert.provider,
                        &cert.request_id.as_str(),
                        &cert.key_id,
                        &codec::micros(cert.valid_before),
                        &codec::micros(now),
                    ],
                )
                .map_err(db)?;
            let serial = u64::try_from(row.get::<_, i64>(0))
                .map_err(|_| StoreError::Corrupt("negative certificate serial".into()))?;
            append_audit_tx(tx, self.signer.as_ref(), &[audit(serial)], now)?;
            Ok(serial)
        })
    }

    fn revoked_certificates(&self, provider: &str, now: OffsetDateTime) -> StoreResult<Vec<u64>> {
        let rows = self
            .pool
            .get()?
            .query(
                "SELECT c.serial FROM certificates c JOIN requests r ON r.id = c.request_id \
                 WHERE c.provider = $1 AND c.valid_before > $2 AND r.state <> 'active' \
                 ORDER BY c.serial",
                &[&provider, &codec::micros(now)],
            )
            .map_err(db)?;
        rows.iter()
            .map(|row| {
                u64::try_from(row.get::<_, i64>(0))
                    .map_err(|_| StoreError::Corrupt("negative serial".into()))
            })
            .collect()
    }

    fn ping(&self) -> StoreResult<()> {
        self.pool
            .get()?
            .simple_query("SELECT 1")
            .map(|_| ())
            .map_err(db)
    }
}
