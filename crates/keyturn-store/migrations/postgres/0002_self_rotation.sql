-- The self-rotation policy of each key, materialised when the key is created and inherited by
-- its successors. Keys created before this version get the default policy: self-rotation
-- allowed, and a rotation chain may last 365 days (31536000000 ms) from its first key.

ALTER TABLE keys ADD COLUMN self_rotation BOOLEAN NOT NULL DEFAULT TRUE;
ALTER TABLE keys ADD COLUMN max_chain_lifetime_ms BIGINT NOT NULL DEFAULT 31536000000;
