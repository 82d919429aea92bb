//! The PostgreSQL store, shared by several `airlock serve` replicas. Row locks
//! serialise each request and the audit chain head; background work is claimed
//! with `FOR UPDATE SKIP LOCKED` so two replicas never work on the same row.
//! Queries are in `sql/`; this file is the dialect: the connection pool,
//! transactions, advisory locks, error and type mapping.

use std::error::Error;
use std::str::FromStr;
use std::time::Duration;

use airlock_core::audit_chain::CheckpointSigner;
use bytes::BytesMut;
use postgres::error::SqlState;
use postgres::fallible_iterator::FallibleIterator;
use postgres::types::{IsNull, ToSql, Type, WrongType};
use postgres::{Client, Config, GenericClient, NoTls};
use r2d2_postgres::PostgresConnectionManager;

use crate::sql::{self, Cell, Db, LockKey, Row, Tx, Value};
use crate::{StoreError, StoreResult};

/// Most connections one store opens.
const MAX_CONNECTIONS: u32 = 16;
/// How long a caller waits for a free connection before giving up.
const CHECKOUT_TIMEOUT: Duration = Duration::from_secs(10);
/// Rows fetched per round trip by `audit_scan`: bounds memory on huge chains.
const SCAN_CHUNK: i32 = 10_000;

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
    include_str!("../migrations/postgres/0008_gateway_sessions.sql"),
    include_str!("../migrations/postgres/0009_leased_index.sql"),
];

type Pool = r2d2::Pool<PostgresConnectionManager<NoTls>>;

/// PostgreSQL-backed [`Store`](crate::Store).
pub struct PgStore {
    pool: Pool,
    signer: Option<CheckpointSigner>,
}

fn db(e: postgres::Error) -> StoreError {
    if e.code() == Some(&SqlState::UNIQUE_VIOLATION) {
        StoreError::Duplicate(format!("row ({e})"))
    } else {
        StoreError::Unavailable(e.to_string())
    }
}

/// A column that does not decode is bad data, not a bad connection.
fn col(e: postgres::Error) -> StoreError {
    StoreError::Corrupt(e.to_string())
}

impl ToSql for Value<'_> {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn Error + Sync + Send>> {
        match *self {
            Value::Null => Ok(IsNull::Yes),
            // `schema_version.version` is the one INTEGER column.
            Value::Int(v) if *ty == Type::INT4 => i32::try_from(v)?.to_sql(ty, out),
            Value::Int(v) => v.to_sql(ty, out),
            Value::Bool(v) => v.to_sql(ty, out),
            Value::Text(v) => v.to_sql(ty, out),
            Value::Blob(v) => v.to_sql(ty, out),
            Value::TextList(v) => v.to_sql(ty, out),
        }
    }

    fn accepts(_: &Type) -> bool {
        // Checked per value in `to_sql_checked`.
        true
    }

    fn to_sql_checked(
        &self,
        ty: &Type,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn Error + Sync + Send>> {
        let accepts = match self {
            Value::Null => true,
            Value::Int(_) => i64::accepts(ty) || i32::accepts(ty),
            Value::Bool(_) => bool::accepts(ty),
            Value::Text(_) => <&str>::accepts(ty),
            Value::Blob(_) => <&[u8]>::accepts(ty),
            Value::TextList(_) => <&[String]>::accepts(ty),
        };
        if !accepts {
            return Err(Box::new(WrongType::new::<Self>(ty.clone())));
        }
        self.to_sql(ty, out)
    }
}

impl Row for postgres::Row {
    fn cell(&self, i: usize) -> StoreResult<Cell<'_>> {
        let ty = self
            .columns()
            .get(i)
            .ok_or_else(|| StoreError::Corrupt(format!("no column {i}")))?
            .type_()
            .clone();
        let cell = if ty == Type::BOOL {
            self.try_get::<_, Option<bool>>(i)
                .map(|v| v.map(Cell::Bool))
        } else if ty == Type::INT8 {
            self.try_get::<_, Option<i64>>(i).map(|v| v.map(Cell::Int))
        } else if ty == Type::INT4 {
            self.try_get::<_, Option<i32>>(i)
                .map(|v| v.map(|v| Cell::Int(v.into())))
        } else if ty == Type::BYTEA {
            self.try_get::<_, Option<&[u8]>>(i)
                .map(|v| v.map(Cell::Blob))
        } else {
            self.try_get::<_, Option<&str>>(i)
                .map(|v| v.map(Cell::Text))
        };
        Ok(cell.map_err(col)?.unwrap_or(Cell::Null))
    }
}

/// A client or transaction as [`Tx`].
struct Pg<'c, C>(&'c mut C);

fn refs<'a>(params: &'a [Value<'_>]) -> Vec<&'a (dyn ToSql + Sync)> {
    params.iter().map(|v| v as &(dyn ToSql + Sync)).collect()
}

impl<C: GenericClient> Tx for Pg<'_, C> {
    fn execute(&mut self, sql: &str, params: &[Value<'_>]) -> StoreResult<u64> {
        self.0.execute(sql, &refs(params)).map_err(db)
    }

    fn query(
        &mut self,
        sql: &str,
        params: &[Value<'_>],
        each: &mut dyn FnMut(&dyn Row) -> StoreResult<()>,
    ) -> StoreResult<()> {
        for r in self.0.query(sql, &refs(params)).map_err(db)? {
            each(&r)?;
        }
        Ok(())
    }

    fn lock(&mut self, key: LockKey<'_>) -> StoreResult<()> {
        // Keyed by schema (but the identity lock), so stores in different schemas never wait on each other.
        let (sql, params) = match key {
            LockKey::Rate(principal, key) => (
                "SELECT pg_advisory_xact_lock(hashtext('airlock-rate:' || current_schema() || ':' || $1 || ':' || $2))",
                vec![Value::Text(principal), Value::Text(key)],
            ),
            LockKey::Identity => ("SELECT pg_advisory_xact_lock(hashtext('airlock-identity'))", vec![]),
        };
        self.0.execute(sql, &refs(&params)).map_err(db)?;
        Ok(())
    }

    fn batch(&mut self, sql: &str) -> StoreResult<()> {
        self.0.batch_execute(sql).map_err(db)
    }
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
        // Connections are opened on demand; one found closed on return is dropped,
        // and no test query runs on checkout (a broken one fails its statement).
        let pool = r2d2::Pool::builder()
            .max_size(MAX_CONNECTIONS)
            .min_idle(Some(0))
            .connection_timeout(CHECKOUT_TIMEOUT)
            .test_on_check_out(false)
            .build_unchecked(PostgresConnectionManager::new(config, NoTls));
        Ok(PgStore { pool, signer })
    }

    fn conn(&self) -> StoreResult<r2d2::PooledConnection<PostgresConnectionManager<NoTls>>> {
        self.pool.get().map_err(|e| {
            StoreError::Unavailable(format!(
                "no PostgreSQL connection within {}s (at most {MAX_CONNECTIONS}): {e}",
                CHECKOUT_TIMEOUT.as_secs()
            ))
        })
    }
}

fn migrate(client: &mut Client) -> StoreResult<()> {
    let mut tx = client.transaction().map_err(db)?;
    // Replicas starting together take turns; keyed by schema so per-test schemas do not wait on each other.
    tx.execute(
        "SELECT pg_advisory_xact_lock(hashtext('airlock-migrate:' || current_schema()))",
        &[],
    )
    .map_err(db)?;
    sql::migrate(&mut Pg(&mut tx), MIGRATIONS)?;
    tx.commit().map_err(db)
}

impl Db for PgStore {
    fn write<T>(&self, f: impl FnOnce(&mut dyn Tx) -> StoreResult<T>) -> StoreResult<T> {
        let mut conn = self.conn()?;
        let mut tx = conn.transaction().map_err(db)?;
        let out = f(&mut Pg(&mut tx))?;
        tx.commit().map_err(db)?;
        Ok(out)
    }

    fn read<T>(&self, f: impl FnOnce(&mut dyn Tx) -> StoreResult<T>) -> StoreResult<T> {
        f(&mut Pg(&mut *self.conn()?))
    }

    fn reader<T>(&self, f: impl FnOnce(&mut dyn Tx) -> StoreResult<T>) -> StoreResult<T> {
        self.read(f)
    }

    fn scan(
        &self,
        sql: &str,
        each: &mut dyn FnMut(&dyn Row) -> StoreResult<bool>,
    ) -> StoreResult<()> {
        let mut conn = self.conn()?;
        // A portal inside a read-only transaction: one consistent snapshot,
        // fetched in bounded chunks, and an early stop abandons the rest cheaply.
        let mut tx = conn
            .build_transaction()
            .read_only(true)
            .start()
            .map_err(db)?;
        let stmt = tx.prepare(sql).map_err(db)?;
        let portal = tx.bind(&stmt, &[]).map_err(db)?;
        loop {
            let mut rows = tx.query_portal_raw(&portal, SCAN_CHUNK).map_err(db)?;
            let mut n = 0;
            while let Some(r) = rows.next().map_err(db)? {
                n += 1;
                if !each(&r)? {
                    return Ok(());
                }
            }
            if n < SCAN_CHUNK {
                return Ok(());
            }
        }
    }

    fn signer(&self) -> Option<&CheckpointSigner> {
        self.signer.as_ref()
    }
}
