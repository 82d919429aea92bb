//! Local emulations of third-party APIs that cannot run on a test machine.
//! Each follows the documented wire behaviour (paths, status codes, error
//! bodies, concurrency rules) closely enough that the production client code
//! runs against it unchanged; only the base URL differs. Test-only: never
//! linked into the `airlock` binary.

/// GCP IAM (Resource Manager policies, OAuth token endpoint, metadata server).
pub mod gcp;
pub mod kubernetes;
/// Slack Web API (chat.postMessage, chat.update, users.info, response_url) and signed interactions.
pub mod slack;
