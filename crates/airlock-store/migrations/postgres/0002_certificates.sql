CREATE TABLE certificates (
    serial BIGSERIAL PRIMARY KEY,
    provider TEXT NOT NULL,
    request_id TEXT NOT NULL REFERENCES requests (id),
    key_id TEXT NOT NULL,
    valid_before BIGINT NOT NULL,
    issued_at BIGINT NOT NULL
);
CREATE INDEX certificates_provider ON certificates (provider, valid_before);
