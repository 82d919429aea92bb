//! [`NotifyStore`] on PostgreSQL: the sink lease is taken with a conditional
//! UPDATE, so exactly one replica delivers a sink's events at a time.

use time::OffsetDateTime;

use super::{col, db, PgStore};
use crate::codec;
use crate::notify::NotifyStore;
use crate::StoreResult;

impl NotifyStore for PgStore {
    fn lease_sink(
        &self,
        sink: &str,
        owner: &str,
        start_seq: u64,
        until: OffsetDateTime,
        now: OffsetDateTime,
    ) -> StoreResult<Option<u64>> {
        self.write(|tx| {
            tx.execute(
                "INSERT INTO notify_sinks (sink, seq, updated_at) VALUES ($1, $2, $3) \
                 ON CONFLICT (sink) DO NOTHING",
                &[&sink, &(start_seq as i64), &codec::micros(now)],
            )
            .map_err(db)?;
            let row = tx
                .query_opt(
                    "UPDATE notify_sinks SET lease_owner = $2, lease_until = $3 \
                     WHERE sink = $1 AND (lease_owner IS NULL OR lease_owner = $2 OR lease_until <= $4) \
                     RETURNING seq",
                    &[&sink, &owner, &codec::micros(until), &codec::micros(now)],
                )
                .map_err(db)?;
            row.map(|r| r.try_get::<_, i64>(0).map(|s| s as u64).map_err(col))
                .transpose()
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
                .execute(
                    "UPDATE notify_sinks SET seq = GREATEST(seq, $3), updated_at = $4 \
                     WHERE sink = $1 AND lease_owner = $2",
                    &[&sink, &owner, &(seq as i64), &codec::micros(now)],
                )
                .map_err(db)?;
            Ok(n == 1)
        })
    }

    fn sink_cursors(&self) -> StoreResult<Vec<(String, u64)>> {
        let rows = self
            .pool
            .get()?
            .query("SELECT sink, seq FROM notify_sinks ORDER BY sink", &[])
            .map_err(db)?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get::<_, String>(0).map_err(col)?,
                    r.try_get::<_, i64>(1).map_err(col)? as u64,
                ))
            })
            .collect()
    }

    fn chat_message(&self, sink: &str, subject: &str) -> StoreResult<Option<String>> {
        let row = self
            .pool
            .get()?
            .query_opt(
                "SELECT message FROM chat_messages WHERE sink = $1 AND subject = $2",
                &[&sink, &subject],
            )
            .map_err(db)?;
        row.map(|r| r.try_get(0).map_err(col)).transpose()
    }

    fn put_chat_message(&self, sink: &str, subject: &str, message: &str) -> StoreResult<()> {
        self.write(|tx| {
            tx.execute(
                "INSERT INTO chat_messages (sink, subject, message) VALUES ($1, $2, $3) \
                 ON CONFLICT (sink, subject) DO UPDATE SET message = EXCLUDED.message",
                &[&sink, &subject, &message],
            )
            .map_err(db)?;
            Ok(())
        })
    }
}
