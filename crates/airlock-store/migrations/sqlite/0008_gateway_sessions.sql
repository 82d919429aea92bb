CREATE TABLE gateway_sessions (
    id TEXT PRIMARY KEY,
    request_id TEXT NOT NULL,
    entitlement TEXT NOT NULL,
    username TEXT NOT NULL,
    kind TEXT NOT NULL,
    replica TEXT NOT NULL,
    started_at INTEGER NOT NULL,
    ended_at INTEGER,
    bytes_up INTEGER NOT NULL,
    bytes_down INTEGER NOT NULL,
    end_reason TEXT,
    recording_sha256 TEXT,
    terminate_requested TEXT,
    lease_until INTEGER NOT NULL
);
CREATE INDEX gateway_sessions_started ON gateway_sessions (started_at DESC, id);
CREATE INDEX gateway_sessions_request ON gateway_sessions (request_id, started_at DESC);
CREATE INDEX gateway_sessions_open ON gateway_sessions (lease_until) WHERE ended_at IS NULL;
CREATE TABLE gateway_recordings (
    session_id TEXT NOT NULL REFERENCES gateway_sessions (id) ON DELETE CASCADE,
    seq INTEGER NOT NULL,
    body BLOB NOT NULL,
    PRIMARY KEY (session_id, seq)
);
