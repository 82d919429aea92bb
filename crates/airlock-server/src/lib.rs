//! The airlock server: HTTP only. REST API, web UI, OIDC web flow and the
//! Slack endpoint over the application layer (`airlock-service`); service
//! errors become problem+json in one place (`problem.rs`).

pub mod access_api;
pub mod api;
pub mod app;
mod audit_api;
pub mod auth;
pub mod bodies;
pub mod gateway_api;
pub mod identity;
pub mod oidc;
pub mod problem;
pub mod runs_api;
pub mod session;
pub mod slack_interactions;
pub mod web;

pub use app::{App, ServeOptions};
