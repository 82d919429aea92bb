CREATE TABLE runs (
    id TEXT PRIMARY KEY,
    state TEXT NOT NULL,
    requester TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    lapses_at INTEGER,
    start_after INTEGER,
    lease_owner TEXT,
    lease_until INTEGER,
    cancel_requested TEXT,
    doc TEXT NOT NULL
);
CREATE INDEX runs_created ON runs (created_at DESC, id);
CREATE INDEX runs_requester ON runs (requester, created_at DESC);
CREATE INDEX runs_state ON runs (state, created_at);
CREATE TABLE run_reviews (
    id INTEGER PRIMARY KEY,
    run_id TEXT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    reviewer TEXT NOT NULL,
    decision TEXT NOT NULL,
    comment TEXT,
    at INTEGER NOT NULL,
    UNIQUE (run_id, reviewer)
);
CREATE TABLE run_transcripts (
    run_id TEXT PRIMARY KEY REFERENCES runs (id) ON DELETE CASCADE,
    body BLOB NOT NULL,
    sha256 TEXT NOT NULL
);
CREATE TABLE rate_events (
    id INTEGER PRIMARY KEY,
    principal TEXT NOT NULL,
    rate_key TEXT NOT NULL,
    at INTEGER NOT NULL,
    run_id TEXT NOT NULL
);
CREATE INDEX rate_events_key ON rate_events (principal, rate_key, at);
