-- A random salt per request for its grant secret (empty: made before salts).
ALTER TABLE requests ADD COLUMN secret_salt BLOB NOT NULL DEFAULT X'';
