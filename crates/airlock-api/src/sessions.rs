//! Gateway sessions as the API answers them (`/api/v1/sessions…`) and what a
//! client needs before it tunnels (`/api/v1/requests/{id}/gateway`).

use serde::{Deserialize, Serialize};

/// The WebSocket subprotocol of a gateway tunnel: raw session bytes in
/// binary messages, each way; an empty binary message from the client is
/// its end of stream (a half-close: answers still come down); the server's
/// close frame reason is the session's `end_reason`.
pub const TUNNEL_PROTOCOL: &str = "airlock-tunnel-v1";

/// Media type of a PostgreSQL session's query log (JSON Lines).
pub const QUERY_LOG_TYPE: &str = "application/x-ndjson";

/// Media type of an SSH session's terminal recording (asciicast v2).
pub const RECORDING_TYPE: &str = "application/x-asciicast";

/// One gateway session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionView {
    pub id: String,
    pub request_id: String,
    pub entitlement: String,
    pub user: String,
    /// `postgres`, `ssh` or `tcp`.
    pub kind: String,
    pub started_at: String,
    pub ended_at: Option<String>,
    /// Bytes from the person to the target.
    pub bytes_up: u64,
    /// Bytes from the target to the person.
    pub bytes_down: u64,
    /// `client_closed`, `not_after`, `revoked`, `locked`, `terminated`,
    /// `target_closed` or `error`; `null` while open.
    pub end_reason: Option<String>,
    /// SHA-256 (hex) of the recording, as in the `session.ended` audit event.
    #[serde(default)]
    pub recording_sha256: Option<String>,
}

/// What `airlock connect` learns before it opens its listener.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GatewayInfo {
    pub request_id: String,
    pub entitlement: String,
    /// `postgres`, `ssh` or `tcp`.
    pub kind: String,
    /// PostgreSQL: the database sessions open when the client names none.
    pub database: Option<String>,
    /// When every session of the grant is cut.
    pub not_after: String,
}
