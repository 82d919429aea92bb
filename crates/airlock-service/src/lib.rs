//! The airlock application layer: requests and their reviews, grants and the
//! reconciler, tool-proxy runs, locks and tokens, notifiers, drift and the
//! audit log's tree heads. It speaks domain types and [`ServiceError`], never
//! HTTP: the server crate maps errors to statuses in one place, and a test can
//! drive the whole application without a listener.

pub mod audit;
pub mod catalog;
pub mod context;
pub mod drift;
pub mod error;
pub mod gateway;
pub mod keys;
pub mod lifecycle;
pub mod locks;
pub mod metrics;
pub mod notify;
pub mod page;
pub mod proxy;
pub mod queue;
pub mod reconciler;
pub mod surface;
pub mod tlog;
pub mod tokens;
pub mod views;
pub mod visibility;

pub use context::{Fault, ServeOptions, Service, StartError};
pub use error::{ServiceError, ServiceResult, SetupError};
