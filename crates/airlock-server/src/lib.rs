//! The airlock server: REST API, reconciler and wiring of store, providers and
//! policy. Domain rules come from `airlock-core`; this crate does the IO.

pub mod access_api;
pub mod api;
pub mod app;
mod audit_api;
pub mod auth;
pub mod bodies;
pub mod catalog;
pub mod drift;
pub mod identity;
pub mod keys;
pub mod lifecycle;
pub mod locks;
pub mod metrics;
pub mod notify;
pub mod oidc;
pub mod problem;
pub mod proxy;
pub mod queue;
pub mod reconciler;
pub mod session;
pub mod surface;
pub mod tlog;
pub mod tokens;
pub mod visibility;
pub mod web;

pub use app::{App, ServeOptions};
