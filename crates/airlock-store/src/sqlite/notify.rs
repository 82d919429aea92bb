//! [`NotifyStore`] on SQLite (one process: the write lock orders everything).

use rusqlite::{params, OptionalExtension};
use time::OffsetDateTime;

use super::{db, SqliteStore};
use crate::codec;
use crate::notify::NotifyStore;
use crate::StoreResult;

impl NotifyStore for SqliteStore {
    fn lease_sink(
        &self,
        sink: &str,
        owner: &str,
        start_seq: u64,
        until: OffsetDateTime,
        now: OffsetDateTime,
    ) -> StoreResult<Option<u64>> {
        self.write(|tx| {
            tx.prepare_cached(
                "INSERT INTO notify_sinks (sink, seq, updated_at) VALUES (?1, ?2, ?3) \
                 ON CONFLICT (sink) DO NOTHING",
            )
            .map_err(db)?
            .execute(params![sink, start_seq as i64, codec::micros(now)])
            .map_err(db)?;
            let seq: Option<i64> = tx
                .prepare_cached(
                    "UPDATE notify_sinks SET lease_owner = ?2, lease_until = ?3 \
                     WHERE sink = ?1 AND (lease_owner IS NULL OR lease_owner = ?2 OR lease_until <= ?4) \
                     RETURNING seq",
                )
                .map_err(db)?
                .query_row(
                    params![sink, owner, codec::micros(until), codec::micros(now)],
                    |r| r.get(0),
                )
                .optional()
                .map_err(db)?;
            Ok(seq.map(|s| s as u64))
        })
    }

    fn advance_sink(
        &self,
        sink: &str,
        owner: &str,
        seq: u64,
        now: OffsetDateTime,
    ) -> StoreResult<bool> {
        self.write(|tx| {
            let n = tx
                .prepare_cached(
                    "UPDATE notify_sinks SET seq = max(seq, ?3), updated_at = ?4 \
                     WHERE sink = ?1 AND lease_owner = ?2",
                )
                .map_err(db)?
                .execute(params![sink, owner, seq as i64, codec::micros(now)])
                .map_err(db)?;
            Ok(n == 1)
        })
    }

    fn sink_cursors(&self) -> StoreResult<Vec<(String, u64)>> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached("SELECT sink, seq FROM notify_sinks ORDER BY sink")
            .map_err(db)?;
        let rows = stmt
            .query_map([], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)? as u64))
            })
            .map_err(db)?;
        rows.collect::<Result<_, _>>().map_err(db)
    }

    fn chat_message(&self, sink: &str, subject: &str) -> StoreResult<Option<String>> {
        self.conn()
            .prepare_cached("SELECT message FROM chat_messages WHERE sink = ?1 AND subject = ?2")
            .map_err(db)?
            .query_row(params![sink, subject], |r| r.get(0))
            .optional()
            .map_err(db)
    }

    fn put_chat_message(&self, sink: &str, subject: &str, message: &str) -> StoreResult<()> {
        self.write(|tx| {
            tx.prepare_cached(
                "INSERT INTO chat_messages (sink, subject, message) VALUES (?1, ?2, ?3) \
                 ON CONFLICT (sink, subject) DO UPDATE SET message = excluded.message",
            )
            .map_err(db)?
            .execute(params![sink, subject, message])
            .map_err(db)?;
            Ok(())
        })
    }
}
