//! The wire between `airlock serve` and its clients: JSON bodies, RFC 9457
//! problem details, list pages and the run-output stream. The server encodes
//! with these types and the CLI decodes with the same ones, so the two cannot
//! drift apart. No IO and no HTTP library here: only shapes and byte layouts.

pub mod access;
pub mod page;
pub mod problem;
pub mod requests;
pub mod runs;
pub mod sessions;
pub mod stream;

pub use problem::Problem;
