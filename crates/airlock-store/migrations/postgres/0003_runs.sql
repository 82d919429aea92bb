CREATE TABLE runs (
    id TEXT PRIMARY KEY,
    state TEXT NOT NULL,
    requester TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    lapses_at BIGINT,
    start_after BIGINT,
    lease_owner TEXT,
    lease_until BIGINT,
    cancel_requested TEXT,
    doc TEXT NOT NULL
);
CREATE INDEX runs_created ON runs (created_at DESC, id);
CREATE INDEX runs_requester ON runs (requester, created_at DESC);
CREATE INDEX runs_state ON runs (state, created_at);
CREATE TABLE run_reviews (
    id BIGSERIAL PRIMARY KEY,
    run_id TEXT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    reviewer TEXT NOT NULL,
    decision TEXT NOT NULL,
    comment TEXT,
    at BIGINT NOT NULL,
    UNIQUE (run_id, reviewer)
);
CREATE TABLE run_transcripts (
    run_id TEXT PRIMARY KEY REFERENCES runs (id) ON DELETE CASCADE,
    body BYTEA NOT NULL,
    sha256 TEXT NOT NULL
);
CREATE TABLE rate_events (
    id BIGSERIAL PRIMARY KEY,
    principal TEXT NOT NULL,
    rate_key TEXT NOT NULL,
    at BIGINT NOT NULL,
    run_id TEXT NOT NULL
);
CREATE INDEX rate_events_key ON rate_events (principal, rate_key, at);
