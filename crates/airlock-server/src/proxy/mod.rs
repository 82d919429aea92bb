//! The tool proxy: `airlock exec` and catalog operations run on the server,
//! checked against rules and Cedar, rate-limited and approved through the
//! store, executed without a shell in their own process group, streamed back
//! live and recorded (transcript hash in the audit log).
//!
//! Exactly-once: a run moves `approved → running` only inside a store
//! transaction that locks its row and records the executor's lease. A run
//! found `running` with an expired lease (its server died) is marked failed,
//! never re-run: the command may have had effects, so a person decides.

pub mod api;
pub mod background;
pub mod executor;
pub mod frames;
pub mod hub;
pub mod runs;

use std::time::Duration;

pub use hub::Hub;

/// How long an executor's hold on a running run lasts unless renewed.
pub const LEASE: Duration = Duration::from_secs(30);
/// How often a running run's lease is renewed (and a cancel request noticed).
pub const RENEW_EVERY: Duration = Duration::from_secs(5);
/// An approved run whose requester waits to stream it is started by the
/// server anyway after this long (the requester may have gone away).
pub const ATTACH_GRACE: Duration = Duration::from_secs(60);
