-- The self-rotation policy of each key, materialised when the key is created and inherited by
-- its successors. Keys created before this version get the default policy: self-rotation
-- allowed, and a rotation chain may last 365 days (31536000000 ms) from its first key.

ALTER TABLE keys ADD COLUMN self_rotation INTEGER NOT NULL DEFAULT 1; -- 1 allowed, 0 rejected
ALTER TABLE keys ADD COLUMN max_chain_lifetime_ms INTEGER NOT NULL DEFAULT 31536000000;
