CREATE TABLE requests (
    id TEXT PRIMARY KEY,
    entitlement TEXT NOT NULL,
    requester TEXT NOT NULL,
    reason TEXT NOT NULL,
    state TEXT NOT NULL,
    requested_duration BIGINT NOT NULL,
    not_before BIGINT,
    not_after BIGINT,
    breakglass BOOLEAN NOT NULL,
    post_review_closed BOOLEAN NOT NULL,
    grant_phase TEXT NOT NULL,
    grant_attempts BIGINT NOT NULL,
    grant_last_error TEXT,
    grant_next_attempt_at BIGINT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    lapses_at BIGINT NOT NULL,
    lease_owner TEXT,
    lease_until BIGINT
);
CREATE INDEX requests_state_not_after ON requests (state, not_after);
CREATE INDEX requests_state_lapses_at ON requests (state, lapses_at);
CREATE INDEX requests_grant_phase ON requests (grant_phase, grant_next_attempt_at);
CREATE INDEX requests_created ON requests (created_at DESC, id);
CREATE INDEX requests_requester ON requests (requester, created_at DESC);
CREATE INDEX requests_entitlement ON requests (entitlement, created_at DESC);

CREATE TABLE reviews (
    id BIGSERIAL PRIMARY KEY,
    request_id TEXT NOT NULL REFERENCES requests (id) ON DELETE CASCADE,
    reviewer TEXT NOT NULL,
    decision TEXT NOT NULL,
    comment TEXT,
    at BIGINT NOT NULL,
    UNIQUE (request_id, reviewer)
);

CREATE TABLE audit_events (
    seq BIGINT PRIMARY KEY,
    body BYTEA NOT NULL,
    hash BYTEA NOT NULL
);
CREATE TABLE audit_head (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    seq BIGINT NOT NULL,
    hash BYTEA NOT NULL
);
INSERT INTO audit_head (id, seq, hash) VALUES (1, 0, decode(repeat('00', 32), 'hex'));
CREATE TABLE audit_checkpoints (
    seq BIGINT PRIMARY KEY,
    hash BYTEA NOT NULL,
    signature BYTEA NOT NULL
);

CREATE TABLE tokens (
    hash BYTEA PRIMARY KEY,
    user_name TEXT NOT NULL,
    groups TEXT NOT NULL,
    admin BOOLEAN NOT NULL,
    created_by TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    revoked BOOLEAN NOT NULL
);
