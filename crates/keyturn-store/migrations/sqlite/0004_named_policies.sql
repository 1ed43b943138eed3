-- Named policies that every process reads from the store, and the policy each key was created
-- under. Keys that exist before this version were created under the built-in policy, so they
-- get the name 'default'. overlap_after_first_use_ms is set on a rotated key whose rotation
-- asked for it: the successor's first use then shortens the key's overlap window.
-- Durations are milliseconds; NULL means the optional value is unset.

CREATE TABLE policies (
    name TEXT PRIMARY KEY NOT NULL,
    max_lifetime_ms INTEGER NOT NULL,
    grace_ms INTEGER NOT NULL,
    warn_before_ms INTEGER NOT NULL,
    default_overlap_ms INTEGER NOT NULL,
    self_rotation INTEGER NOT NULL,
    max_chain_lifetime_ms INTEGER NOT NULL,
    rotate_every_ms INTEGER,
    overlap_after_first_use_ms INTEGER,
    updated_at INTEGER NOT NULL
);

ALTER TABLE keys ADD COLUMN policy TEXT NOT NULL DEFAULT 'default';
ALTER TABLE keys ADD COLUMN overlap_after_first_use_ms INTEGER;
CREATE INDEX keys_policy ON keys (policy);
