//! The one place queries are written. Every statement is PostgreSQL text
//! (`$1` placeholders, `= ANY($n)` over a list, `FOR UPDATE`) run through a
//! small transaction interface, [`Tx`]; each dialect file implements it and
//! [`Db`] (connections, transactions, locks) and nothing else. The SQLite
//! side rewrites the text once per statement ([`sqlite_text`]).
//!
//! Every `Store` trait is implemented once, for any [`Db`], in the files
//! below; the stores are the two `Db`s.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex};

use airlock_core::audit_chain::CheckpointSigner;

use crate::{StoreError, StoreResult};

mod access;
mod audit;
mod notify;
mod requests;
mod reviews;
mod runs;
mod sessions;

/// A statement parameter.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Value<'a> {
    Null,
    Int(i64),
    Bool(bool),
    Text(&'a str),
    Blob(&'a [u8]),
    /// A list for `= ANY($n)` (a JSON array on SQLite).
    TextList(&'a [String]),
}

impl From<i64> for Value<'_> {
    fn from(v: i64) -> Self {
        Value::Int(v)
    }
}

impl From<bool> for Value<'_> {
    fn from(v: bool) -> Self {
        Value::Bool(v)
    }
}

impl<'a> From<&'a str> for Value<'a> {
    fn from(v: &'a str) -> Self {
        Value::Text(v)
    }
}

impl<'a> From<&'a String> for Value<'a> {
    fn from(v: &'a String) -> Self {
        Value::Text(v)
    }
}

impl<'a> From<&'a [u8]> for Value<'a> {
    fn from(v: &'a [u8]) -> Self {
        Value::Blob(v)
    }
}

impl<'a> From<&'a Vec<u8>> for Value<'a> {
    fn from(v: &'a Vec<u8>) -> Self {
        Value::Blob(v)
    }
}

impl<'a> From<&'a [String]> for Value<'a> {
    fn from(v: &'a [String]) -> Self {
        Value::TextList(v)
    }
}

impl<'a, T: Into<Value<'a>>> From<Option<T>> for Value<'a> {
    fn from(v: Option<T>) -> Self {
        v.map_or(Value::Null, Into::into)
    }
}

/// `&[Value]` from expressions that convert into [`Value`].
macro_rules! params {
    ($($v:expr),* $(,)?) => {
        &[$($crate::sql::Value::from($v)),*][..]
    };
}
pub(crate) use params;

/// A list statement built from optional filters. Each clause's `$?` takes the
/// next parameter number, so one filter combination is always the same text
/// (cacheable) and no value is ever spliced into the SQL.
pub(crate) struct ListQuery<'a> {
    sql: String,
    args: Vec<Value<'a>>,
}

impl<'a> ListQuery<'a> {
    /// Starts from `SELECT … WHERE TRUE`.
    pub(crate) fn new(select: String) -> Self {
        ListQuery {
            sql: select,
            args: Vec::new(),
        }
    }

    /// Adds ` AND clause`, each `$?` in it bound to the next of `values`.
    pub(crate) fn and(&mut self, clause: &str, values: impl IntoIterator<Item = Value<'a>>) {
        let mut text = String::with_capacity(clause.len() + 4);
        let mut parts = clause.split("$?");
        text.push_str(parts.next().unwrap_or_default());
        let mut values = values.into_iter();
        for part in parts {
            self.args.push(values.next().unwrap_or(Value::Null));
            text.push_str(&format!("${}", self.args.len()));
            text.push_str(part);
        }
        self.sql.push_str(" AND ");
        self.sql.push_str(&text);
    }

    /// Keyset page: newest first, strictly after the cursor `(created_at, id)`
    /// of the previous page's last row, at most `limit` rows.
    pub(crate) fn page(
        mut self,
        after: Option<(i64, &'a str)>,
        limit: i64,
    ) -> (String, Vec<Value<'a>>) {
        if let Some((at, id)) = after {
            self.args.push(at.into());
            self.args.push(id.into());
            let (a, i) = (self.args.len() - 1, self.args.len());
            self.sql.push_str(&format!(
                " AND (created_at < ${a} OR (created_at = ${a} AND id > ${i}))"
            ));
        }
        self.args.push(limit.into());
        self.sql.push_str(&format!(
            " ORDER BY created_at DESC, id LIMIT ${}",
            self.args.len()
        ));
        (self.sql, self.args)
    }
}

/// One column of a result row as the database returned it.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Cell<'a> {
    Null,
    Int(i64),
    Bool(bool),
    Text(&'a str),
    Blob(&'a [u8]),
}

impl Cell<'_> {
    fn kind(&self) -> &'static str {
        match self {
            Cell::Null => "NULL",
            Cell::Int(_) => "an integer",
            Cell::Bool(_) => "a boolean",
            Cell::Text(_) => "text",
            Cell::Blob(_) => "a blob",
        }
    }
}

/// A result row; columns are read by position with [`get`](Row::get).
pub(crate) trait Row {
    /// Column `i`; a column that does not decode is corrupt data.
    fn cell(&self, i: usize) -> StoreResult<Cell<'_>>;
}

impl<'r> dyn Row + 'r {
    /// Column `i` as `T`.
    pub(crate) fn get<'a, T: FromCell<'a>>(&'a self, i: usize) -> StoreResult<T> {
        let cell = self.cell(i)?;
        T::from_cell(cell).ok_or_else(|| {
            StoreError::Corrupt(format!(
                "column {i} holds {}, expected {}",
                cell.kind(),
                T::WHAT
            ))
        })
    }
}

/// A Rust type a column converts into.
pub(crate) trait FromCell<'a>: Sized {
    /// What the column should hold (for the error message).
    const WHAT: &'static str;
    /// The value, or `None` if the cell holds something else.
    fn from_cell(c: Cell<'a>) -> Option<Self>;
}

impl FromCell<'_> for i64 {
    const WHAT: &'static str = "an integer";
    fn from_cell(c: Cell<'_>) -> Option<Self> {
        match c {
            Cell::Int(v) => Some(v),
            _ => None,
        }
    }
}

impl FromCell<'_> for bool {
    const WHAT: &'static str = "a boolean";
    fn from_cell(c: Cell<'_>) -> Option<Self> {
        match c {
            Cell::Bool(v) => Some(v),
            // SQLite keeps booleans as integers.
            Cell::Int(v) => Some(v != 0),
            _ => None,
        }
    }
}

impl<'a> FromCell<'a> for &'a str {
    const WHAT: &'static str = "text";
    fn from_cell(c: Cell<'a>) -> Option<Self> {
        match c {
            Cell::Text(v) => Some(v),
            _ => None,
        }
    }
}

impl FromCell<'_> for String {
    const WHAT: &'static str = "text";
    fn from_cell(c: Cell<'_>) -> Option<Self> {
        <&str>::from_cell(c).map(str::to_owned)
    }
}

impl<'a> FromCell<'a> for &'a [u8] {
    const WHAT: &'static str = "a blob";
    fn from_cell(c: Cell<'a>) -> Option<Self> {
        match c {
            Cell::Blob(v) => Some(v),
            _ => None,
        }
    }
}

impl FromCell<'_> for Vec<u8> {
    const WHAT: &'static str = "a blob";
    fn from_cell(c: Cell<'_>) -> Option<Self> {
        <&[u8]>::from_cell(c).map(<[u8]>::to_vec)
    }
}

impl<'a, T: FromCell<'a>> FromCell<'a> for Option<T> {
    const WHAT: &'static str = T::WHAT;
    fn from_cell(c: Cell<'a>) -> Option<Self> {
        match c {
            Cell::Null => Some(None),
            other => T::from_cell(other).map(Some),
        }
    }
}

/// What a transaction-scoped lock serialises (PostgreSQL advisory locks;
/// SQLite's write transaction already holds the whole database).
#[derive(Debug, Clone, Copy)]
pub(crate) enum LockKey<'a> {
    /// Counting and inserting the rate-limit events of (principal, key).
    Rate(&'a str, &'a str),
    /// Binding identities to names.
    Identity,
}

/// A connection or transaction statements run on. Unique-key violations come
/// back as [`StoreError::Duplicate`] (see [`duplicate`]).
pub(crate) trait Tx {
    /// Runs a statement; the number of rows it changed.
    fn execute(&mut self, sql: &str, params: &[Value<'_>]) -> StoreResult<u64>;
    /// Runs a query and hands each row to `each`.
    fn query(
        &mut self,
        sql: &str,
        params: &[Value<'_>],
        each: &mut dyn FnMut(&dyn Row) -> StoreResult<()>,
    ) -> StoreResult<()>;
    /// Takes a lock held until the transaction ends.
    fn lock(&mut self, key: LockKey<'_>) -> StoreResult<()>;
    /// Runs several statements without parameters (migrations).
    fn batch(&mut self, sql: &str) -> StoreResult<()>;
}

impl<'t> dyn Tx + 't {
    /// Every row, each turned into a `T` by `f`.
    pub(crate) fn rows<T>(
        &mut self,
        sql: &str,
        params: &[Value<'_>],
        mut f: impl FnMut(&dyn Row) -> StoreResult<T>,
    ) -> StoreResult<Vec<T>> {
        let mut out = Vec::new();
        self.query(sql, params, &mut |r| {
            out.push(f(r)?);
            Ok(())
        })?;
        Ok(out)
    }

    /// The first row, if any, turned into a `T` by `f`.
    pub(crate) fn opt<T>(
        &mut self,
        sql: &str,
        params: &[Value<'_>],
        f: impl FnMut(&dyn Row) -> StoreResult<T>,
    ) -> StoreResult<Option<T>> {
        Ok(self.rows(sql, params, f)?.into_iter().next())
    }

    /// The one row a query always returns (an aggregate), turned into a `T` by `f`.
    pub(crate) fn one<T>(
        &mut self,
        sql: &str,
        params: &[Value<'_>],
        f: impl FnMut(&dyn Row) -> StoreResult<T>,
    ) -> StoreResult<T> {
        self.opt(sql, params, f)?
            .ok_or_else(|| StoreError::Unavailable("query returned no row".into()))
    }
}

/// Names what a refused duplicate was (the database only knows the key).
pub(crate) fn duplicate(what: impl FnOnce() -> String) -> impl FnOnce(StoreError) -> StoreError {
    move |e| match e {
        StoreError::Duplicate(_) => StoreError::Duplicate(what()),
        other => other,
    }
}

/// A database the stores run on: how to get a connection and a transaction.
pub(crate) trait Db: Send + Sync {
    /// Runs `f` in one write transaction, committed if `f` succeeds. It
    /// serialises with other writers on the rows `FOR UPDATE` locks (SQLite:
    /// on the whole database).
    fn write<T>(&self, f: impl FnOnce(&mut dyn Tx) -> StoreResult<T>) -> StoreResult<T>;
    /// Runs `f` on a connection with each statement on its own.
    fn read<T>(&self, f: impl FnOnce(&mut dyn Tx) -> StoreResult<T>) -> StoreResult<T>;
    /// Like [`read`](Db::read), on a connection that never waits for writers
    /// (the audit log's readers).
    fn reader<T>(&self, f: impl FnOnce(&mut dyn Tx) -> StoreResult<T>) -> StoreResult<T>;
    /// Streams a long query over one consistent snapshot, in bounded memory,
    /// without blocking writers; stops when `each` returns false.
    fn scan(
        &self,
        sql: &str,
        each: &mut dyn FnMut(&dyn Row) -> StoreResult<bool>,
    ) -> StoreResult<()>;
    /// Who signs checkpoints, if anyone.
    fn signer(&self) -> Option<&CheckpointSigner>;
}

/// Moves the schema to the newest version inside `tx`, which the caller has
/// locked against other migrators and commits.
pub(crate) fn migrate(tx: &mut dyn Tx, migrations: &[&str]) -> StoreResult<()> {
    tx.batch("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")?;
    let current: i64 = tx.one(
        "SELECT COALESCE(MAX(version), 0) FROM schema_version",
        &[],
        |r| r.get(0),
    )?;
    let current = usize::try_from(current)
        .map_err(|_| StoreError::Corrupt(format!("schema version {current}")))?;
    if current > migrations.len() {
        return Err(StoreError::Unavailable(format!(
            "database schema version {current} is newer than this airlock ({}); upgrade airlock",
            migrations.len()
        )));
    }
    for (i, sql) in migrations.iter().enumerate().skip(current) {
        tx.batch(sql)
            .map_err(|e| StoreError::Unavailable(format!("migration {} failed: {e}", i + 1)))?;
        tx.execute(
            "INSERT INTO schema_version (version) VALUES ($1)",
            params![i as i64 + 1],
        )?;
    }
    Ok(())
}

/// Statement text rewritten for SQLite, once per distinct text: `$n` becomes
/// `?n`, `= ANY($n)` becomes `IN (SELECT value FROM json_each(?n))` (its
/// parameter is bound as a JSON array), and row-locking clauses go (SQLite's
/// write transaction locks the whole database). The cache stays small: list
/// filters only combine fixed fragments, and values are always parameters.
pub(crate) fn sqlite_text(sql: &str) -> Arc<str> {
    static CACHE: LazyLock<Mutex<HashMap<String, Arc<str>>>> = LazyLock::new(Default::default);
    let mut cache = CACHE.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(done) = cache.get(sql) {
        return done.clone();
    }
    let done: Arc<str> = rewrite_for_sqlite(sql).into();
    cache.insert(sql.to_owned(), done.clone());
    done
}

fn rewrite_for_sqlite(sql: &str) -> String {
    let sql = sql
        .replace(" FOR UPDATE SKIP LOCKED", "")
        .replace(" FOR UPDATE", "");
    let mut out = String::with_capacity(sql.len() + 32);
    let mut rest = sql.as_str();
    while let Some(at) = rest.find("= ANY($") {
        out.push_str(&rest[..at]);
        let after = &rest[at + "= ANY($".len()..];
        let digits = after.len() - after.trim_start_matches(|c: char| c.is_ascii_digit()).len();
        match after[digits..].strip_prefix(')') {
            Some(tail) if digits > 0 => {
                out.push_str("IN (SELECT value FROM json_each($");
                out.push_str(&after[..digits]);
                out.push_str("))");
                rest = tail;
            }
            _ => {
                out.push_str("= ANY($");
                rest = after;
            }
        }
    }
    out.push_str(rest);
    // No statement has `$` in a literal, so every `$` before a digit is a placeholder.
    let mut placeholders = String::with_capacity(out.len());
    let mut chars = out.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '$' && chars.peek().is_some_and(|d| d.is_ascii_digit()) {
            placeholders.push('?');
        } else {
            placeholders.push(c);
        }
    }
    placeholders
}

#[cfg(test)]
mod tests {
    use super::rewrite_for_sqlite;

    #[test]
    fn sqlite_text_renumbers_placeholders_and_drops_row_locks() {
        assert_eq!(
            rewrite_for_sqlite("SELECT a FROM t WHERE id = $1 AND b > $12 FOR UPDATE"),
            "SELECT a FROM t WHERE id = ?1 AND b > ?12"
        );
        assert_eq!(
            rewrite_for_sqlite("SELECT id FROM t LIMIT $4 FOR UPDATE SKIP LOCKED) UPDATE"),
            "SELECT id FROM t LIMIT ?4) UPDATE"
        );
    }

    #[test]
    fn sqlite_text_turns_any_into_a_json_each_subquery() {
        assert_eq!(
            rewrite_for_sqlite("WHERE (r = $1 OR e = ANY($2)) AND x = ANY($10)"),
            "WHERE (r = ?1 OR e IN (SELECT value FROM json_each(?2))) AND x IN (SELECT value FROM json_each(?10))"
        );
    }
}
