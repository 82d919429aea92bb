ALTER TABLE tokens ADD COLUMN mfa INTEGER NOT NULL DEFAULT 0;
CREATE TABLE notify_sinks (
    sink TEXT PRIMARY KEY,
    seq INTEGER NOT NULL,
    lease_owner TEXT,
    lease_until INTEGER,
    updated_at INTEGER NOT NULL
);
CREATE TABLE chat_messages (
    sink TEXT NOT NULL,
    subject TEXT NOT NULL,
    message TEXT NOT NULL,
    PRIMARY KEY (sink, subject)
);
