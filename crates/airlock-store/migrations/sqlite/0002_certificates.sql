CREATE TABLE certificates (
    serial INTEGER PRIMARY KEY AUTOINCREMENT,
    provider TEXT NOT NULL,
    request_id TEXT NOT NULL REFERENCES requests (id),
    key_id TEXT NOT NULL,
    valid_before INTEGER NOT NULL,
    issued_at INTEGER NOT NULL
);
CREATE INDEX certificates_provider ON certificates (provider, valid_before);
