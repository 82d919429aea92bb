ALTER TABLE tokens ADD COLUMN mfa BOOLEAN NOT NULL DEFAULT false;
CREATE TABLE notify_sinks (
    sink TEXT PRIMARY KEY,
    seq BIGINT NOT NULL,
    lease_owner TEXT,
    lease_until BIGINT,
    updated_at BIGINT NOT NULL
);
CREATE TABLE chat_messages (
    sink TEXT NOT NULL,
    subject TEXT NOT NULL,
    message TEXT NOT NULL,
    PRIMARY KEY (sink, subject)
);
