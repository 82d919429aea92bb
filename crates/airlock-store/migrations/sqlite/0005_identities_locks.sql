ALTER TABLE tokens ADD COLUMN parent BLOB;
ALTER TABLE tokens ADD COLUMN last_used_at INTEGER;
CREATE INDEX tokens_parent ON tokens (parent);
CREATE INDEX tokens_user ON tokens (user_name, created_at DESC);
CREATE TABLE identities (
    user_name TEXT PRIMARY KEY,
    issuer TEXT NOT NULL,
    subject TEXT NOT NULL,
    bound_at INTEGER NOT NULL,
    UNIQUE (issuer, subject)
);
CREATE TABLE locks (
    kind TEXT NOT NULL,
    name TEXT NOT NULL,
    reason TEXT NOT NULL,
    created_by TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER,
    PRIMARY KEY (kind, name)
);
