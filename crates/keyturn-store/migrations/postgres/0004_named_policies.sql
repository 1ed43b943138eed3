-- Named policies that every instance reads from the store, and the policy each key was created
-- under, the same columns as the SQLite schema of the same version. Keys that exist before this
-- version were created under the built-in policy, so they get the name 'default'.
-- overlap_after_first_use_ms is set on a rotated key whose rotation asked for it: the
-- successor's first use then shortens the key's overlap window. Durations are milliseconds;
-- NULL means the optional value is unset.

CREATE TABLE policies (
    name TEXT PRIMARY KEY NOT NULL,
    max_lifetime_ms BIGINT NOT NULL,
    grace_ms BIGINT NOT NULL,
    warn_before_ms BIGINT NOT NULL,
    default_overlap_ms BIGINT NOT NULL,
    self_rotation BOOLEAN NOT NULL,
    max_chain_lifetime_ms BIGINT NOT NULL,
    rotate_every_ms BIGINT,
    overlap_after_first_use_ms BIGINT,
    updated_at BIGINT NOT NULL
);

ALTER TABLE keys ADD COLUMN policy TEXT NOT NULL DEFAULT 'default';
ALTER TABLE keys ADD COLUMN overlap_after_first_use_ms BIGINT;
CREATE INDEX keys_policy ON keys (policy);
