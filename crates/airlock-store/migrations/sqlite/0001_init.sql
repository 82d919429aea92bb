CREATE TABLE requests (
    id TEXT PRIMARY KEY,
    entitlement TEXT NOT NULL,
    requester TEXT NOT NULL,
    reason TEXT NOT NULL,
    state TEXT NOT NULL,
    requested_duration INTEGER NOT NULL,
    not_before INTEGER,
    not_after INTEGER,
    breakglass INTEGER NOT NULL,
    post_review_closed INTEGER NOT NULL,
    grant_phase TEXT NOT NULL,
    grant_attempts INTEGER NOT NULL,
    grant_last_error TEXT,
    grant_next_attempt_at INTEGER,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    lapses_at INTEGER NOT NULL,
    lease_owner TEXT,
    lease_until INTEGER
);
CREATE INDEX requests_state_not_after ON requests (state, not_after);
CREATE INDEX requests_state_lapses_at ON requests (state, lapses_at);
CREATE INDEX requests_grant_phase ON requests (grant_phase, grant_next_attempt_at);
CREATE INDEX requests_created ON requests (created_at DESC, id);
CREATE INDEX requests_requester ON requests (requester, created_at DESC);
CREATE INDEX requests_entitlement ON requests (entitlement, created_at DESC);

CREATE TABLE reviews (
    id INTEGER PRIMARY KEY,
    request_id TEXT NOT NULL REFERENCES requests (id) ON DELETE CASCADE,
    reviewer TEXT NOT NULL,
    decision TEXT NOT NULL,
    comment TEXT,
    at INTEGER NOT NULL,
    UNIQUE (request_id, reviewer)
);

CREATE TABLE audit_events (
    seq INTEGER PRIMARY KEY,
    body BLOB NOT NULL,
    hash BLOB NOT NULL
);
CREATE TABLE audit_head (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    seq INTEGER NOT NULL,
    hash BLOB NOT NULL
);
INSERT INTO audit_head (id, seq, hash) VALUES (1, 0, zeroblob(32));
CREATE TABLE audit_checkpoints (
    seq INTEGER PRIMARY KEY,
    hash BLOB NOT NULL,
    signature BLOB NOT NULL
);

CREATE TABLE tokens (
    hash BLOB PRIMARY KEY,
    user_name TEXT NOT NULL,
    groups TEXT NOT NULL,
    admin INTEGER NOT NULL,
    created_by TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    revoked INTEGER NOT NULL
);
