//! Delivery state of notifications. The audit chain is the outbox: each sink
//! (a webhook endpoint, Slack, email) keeps the sequence number of the last
//! event it delivered, so delivery is at-least-once and in order across
//! restarts. One replica delivers per sink at a time (a lease), and chat
//! messages remember where they were posted so they can be updated in place.

use time::OffsetDateTime;

use crate::StoreResult;

/// Notification delivery state; part of [`Store`](crate::Store).
pub trait NotifyStore {
    /// Takes or renews the lease of `sink` for `owner` until `until` and
    /// returns the sink's cursor (last delivered seq). A sink seen for the
    /// first time starts at `start_seq`. `None` when another owner holds an
    /// unexpired lease.
    fn lease_sink(
        &self,
        sink: &str,
        owner: &str,
        start_seq: u64,
        until: OffsetDateTime,
        now: OffsetDateTime,
    ) -> StoreResult<Option<u64>>;

    /// Moves the cursor of `sink` forward to `seq` if `owner` still holds the
    /// lease; false (nothing written) if it lost it.
    fn advance_sink(
        &self,
        sink: &str,
        owner: &str,
        seq: u64,
        now: OffsetDateTime,
    ) -> StoreResult<bool>;

    /// Every sink's cursor, for metrics (`sink`, `seq`).
    fn sink_cursors(&self) -> StoreResult<Vec<(String, u64)>>;

    /// Where a chat message about `subject` was posted by `sink` (opaque text), if anywhere.
    fn chat_message(&self, sink: &str, subject: &str) -> StoreResult<Option<String>>;

    /// Records (or replaces) where the chat message about `subject` lives.
    fn put_chat_message(&self, sink: &str, subject: &str, message: &str) -> StoreResult<()>;
}
