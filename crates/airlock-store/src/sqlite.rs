//! The embedded SQLite store (`airlock serve --dev`, single node). One writer
//! connection behind a mutex, `BEGIN IMMEDIATE` for every write so the audit
//! chain head is serialised even if another process opens the same file.
//! Queries are in `sql/`; this file is the dialect: connections, transactions,
//! error and type mapping.

use std::path::Path;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use airlock_core::audit_chain::CheckpointSigner;
use rusqlite::types::{ToSqlOutput, ValueRef};
use rusqlite::{Connection, TransactionBehavior};

use crate::sql::{self, Cell, Db, LockKey, Row, Tx, Value};
use crate::{StoreError, StoreResult};

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
    include_str!("../migrations/sqlite/0008_gateway_sessions.sql"),
    include_str!("../migrations/sqlite/0009_leased_index.sql"),
];

/// SQLite-backed [`Store`](crate::Store).
pub struct SqliteStore {
    conn: Mutex<Connection>,
    // A second connection so a long audit scan (WAL snapshot) never blocks writers.
    reader: Mutex<Connection>,
    signer: Option<CheckpointSigner>,
}

fn db(e: rusqlite::Error) -> StoreError {
    use rusqlite::Error as E;
    match e {
        E::SqliteFailure(f, _)
            if f.code == rusqlite::ErrorCode::ConstraintViolation
                && matches!(
                    f.extended_code,
                    rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY
                        | rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
                ) =>
        {
            StoreError::Duplicate(format!("row ({e})"))
        }
        E::FromSqlConversionFailure(..)
        | E::InvalidColumnType(..)
        | E::IntegralValueOutOfRange(..)
        | E::Utf8Error(_) => StoreError::Corrupt(e.to_string()),
        other => StoreError::Unavailable(other.to_string()),
    }
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

impl rusqlite::ToSql for Value<'_> {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(match *self {
            Value::Null => ToSqlOutput::Borrowed(ValueRef::Null),
            Value::Int(v) => ToSqlOutput::Owned(v.into()),
            Value::Bool(v) => ToSqlOutput::Owned(i64::from(v).into()),
            Value::Text(v) => ToSqlOutput::Borrowed(ValueRef::Text(v.as_bytes())),
            Value::Blob(v) => ToSqlOutput::Borrowed(ValueRef::Blob(v)),
            // `= ANY($n)` became `IN (SELECT value FROM json_each(?n))`.
            Value::TextList(v) => ToSqlOutput::Owned(serde_json::Value::from(v).to_string().into()),
        })
    }
}

impl Row for rusqlite::Row<'_> {
    fn cell(&self, i: usize) -> StoreResult<Cell<'_>> {
        Ok(match self.get_ref(i).map_err(db)? {
            ValueRef::Null => Cell::Null,
            ValueRef::Integer(v) => Cell::Int(v),
            ValueRef::Real(v) => {
                return Err(StoreError::Corrupt(format!(
                    "column {i} holds a real ({v})"
                )))
            }
            ValueRef::Text(t) => Cell::Text(
                std::str::from_utf8(t)
                    .map_err(|e| StoreError::Corrupt(format!("column {i}: {e}")))?,
            ),
            ValueRef::Blob(b) => Cell::Blob(b),
        })
    }
}

/// A connection (in a transaction or not) as [`Tx`].
struct Conn<'c>(&'c Connection);

impl Tx for Conn<'_> {
    fn execute(&mut self, sql: &str, params: &[Value<'_>]) -> StoreResult<u64> {
        let n = self
            .0
            .prepare_cached(&sql::sqlite_text(sql))
            .map_err(db)?
            .execute(rusqlite::params_from_iter(params))
            .map_err(db)?;
        Ok(n as u64)
    }

    fn query(
        &mut self,
        sql: &str,
        params: &[Value<'_>],
        each: &mut dyn FnMut(&dyn Row) -> StoreResult<()>,
    ) -> StoreResult<()> {
        let mut stmt = self.0.prepare_cached(&sql::sqlite_text(sql)).map_err(db)?;
        let mut rows = stmt.query(rusqlite::params_from_iter(params)).map_err(db)?;
        while let Some(r) = rows.next().map_err(db)? {
            each(r)?;
        }
        Ok(())
    }

    fn lock(&mut self, _: LockKey<'_>) -> StoreResult<()> {
        // Every write holds the database write lock (BEGIN IMMEDIATE) already.
        Ok(())
    }

    fn batch(&mut self, sql: &str) -> StoreResult<()> {
        self.0.execute_batch(sql).map_err(db)
    }
}

fn lock(m: &Mutex<Connection>) -> MutexGuard<'_, Connection> {
    // A panic while holding the lock leaves no open transaction behind
    // (rusqlite rolls back on drop), so the connection is still usable.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Runs `f` in a `BEGIN IMMEDIATE` transaction: the write lock is taken before
/// the first read, so what `f` reads is what it writes over.
fn immediate<T>(
    conn: &mut Connection,
    f: impl FnOnce(&mut dyn Tx) -> StoreResult<T>,
) -> StoreResult<T> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(db)?;
    let out = f(&mut Conn(&tx))?;
    tx.commit().map_err(db)?;
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
        // The IMMEDIATE transaction is the migration lock: one opener migrates, others wait.
        immediate(&mut conn, |tx| sql::migrate(tx, MIGRATIONS))?;
        let reader = connect(path)?;
        Ok(SqliteStore {
            conn: Mutex::new(conn),
            reader: Mutex::new(reader),
            signer,
        })
    }
}

impl Db for SqliteStore {
    fn write<T>(&self, f: impl FnOnce(&mut dyn Tx) -> StoreResult<T>) -> StoreResult<T> {
        immediate(&mut lock(&self.conn), f)
    }

    fn read<T>(&self, f: impl FnOnce(&mut dyn Tx) -> StoreResult<T>) -> StoreResult<T> {
        f(&mut Conn(&lock(&self.conn)))
    }

    fn reader<T>(&self, f: impl FnOnce(&mut dyn Tx) -> StoreResult<T>) -> StoreResult<T> {
        f(&mut Conn(&lock(&self.reader)))
    }

    fn scan(
        &self,
        sql: &str,
        each: &mut dyn FnMut(&dyn Row) -> StoreResult<bool>,
    ) -> StoreResult<()> {
        // One statement reads one WAL snapshot; its rows are borrowed from SQLite's page cache.
        let conn = lock(&self.reader);
        let mut stmt = conn.prepare_cached(&sql::sqlite_text(sql)).map_err(db)?;
        let mut rows = stmt.query([]).map_err(db)?;
        while let Some(r) = rows.next().map_err(db)? {
            if !each(r)? {
                break;
            }
        }
        Ok(())
    }

    fn signer(&self) -> Option<&CheckpointSigner> {
        self.signer.as_ref()
    }
}
