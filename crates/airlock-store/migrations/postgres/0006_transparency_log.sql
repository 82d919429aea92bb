-- Transparency log: signed tree heads next to checkpoints, and the Merkle
-- frontier next to the chain head (NULL until the next append rebuilds it).
ALTER TABLE audit_checkpoints ADD COLUMN note TEXT;
ALTER TABLE audit_head ADD COLUMN frontier BYTEA;
