//! [`NotifyStore`] on any [`Db`]: the sink lease is taken with a conditional
//! UPDATE, so exactly one replica delivers a sink's events at a time.

use time::OffsetDateTime;

use super::{params, Db};
use crate::codec;
use crate::notify::NotifyStore;
use crate::StoreResult;

impl<D: Db> NotifyStore for D {
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
                params![sink, start_seq as i64, codec::micros(now)],
            )?;
            let seq: Option<i64> = tx.opt(
                "UPDATE notify_sinks SET lease_owner = $2, lease_until = $3 \
                 WHERE sink = $1 AND (lease_owner IS NULL OR lease_owner = $2 OR lease_until <= $4) \
                 RETURNING seq",
                params![sink, owner, codec::micros(until), codec::micros(now)],
                |r| r.get(0),
            )?;
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
            // CASE, not GREATEST/max: the one spelling both dialects accept.
            let n = tx.execute(
                "UPDATE notify_sinks SET seq = CASE WHEN seq > $3 THEN seq ELSE $3 END, updated_at = $4 \
                 WHERE sink = $1 AND lease_owner = $2",
                params![sink, owner, seq as i64, codec::micros(now)],
            )?;
            Ok(n == 1)
        })
    }

    fn sink_cursors(&self) -> StoreResult<Vec<(String, u64)>> {
        self.read(|tx| {
            tx.rows(
                "SELECT sink, seq FROM notify_sinks ORDER BY sink",
                &[],
                |r| Ok((r.get(0)?, r.get::<i64>(1)? as u64)),
            )
        })
    }

    fn chat_message(&self, sink: &str, subject: &str) -> StoreResult<Option<String>> {
        self.read(|tx| {
            tx.opt(
                "SELECT message FROM chat_messages WHERE sink = $1 AND subject = $2",
                params![sink, subject],
                |r| r.get(0),
            )
        })
    }

    fn put_chat_message(&self, sink: &str, subject: &str, message: &str) -> StoreResult<()> {
        self.write(|tx| {
            tx.execute(
                "INSERT INTO chat_messages (sink, subject, message) VALUES ($1, $2, $3) \
                 ON CONFLICT (sink, subject) DO UPDATE SET message = excluded.message",
                params![sink, subject, message],
            )?;
            Ok(())
        })
    }
}
