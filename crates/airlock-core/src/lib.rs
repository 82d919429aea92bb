//! airlock's domain: names, durations, catalog, request state machine, approval
//! rules, Cedar policy and audit-chain maths. No IO: time comes in as an argument.

pub mod approval;
pub mod audit_chain;
pub mod config;
pub mod duration;
pub mod error;
pub mod merkle;
pub mod names;
pub mod note;
pub mod notify;
pub mod oidc;
pub mod operation;
pub mod param;
pub mod policy;
pub mod principal;
pub mod rate;
pub mod request;
pub mod run;
pub mod service;
pub mod session;
pub mod tool;

pub use duration::Span;
pub use error::Error;
pub use names::{
    EntitlementName, GroupName, OperationName, ProviderName, ServiceName, ToolName, UserName,
};
pub use principal::Principal;
pub use request::{
    GrantPhase, Request, RequestId, RequestState, Review, ReviewDecision, Transition,
};
