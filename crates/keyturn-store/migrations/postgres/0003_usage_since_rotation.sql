-- The usage that the migration report reads, the same columns as the SQLite schema of the same
-- version. uses_since_rotation counts the allowed verifications of a key that usage flushes
-- wrote after the key was rotated: a flush adds its allowed counts when its last use is at or
-- after rotated_at. Keys that exist before this version start at 0, so their count covers only
-- flushes written after the upgrade. The partial index serves the report's scan of keys whose
-- overlap window has not ended.

ALTER TABLE keys ADD COLUMN uses_since_rotation BIGINT NOT NULL DEFAULT 0;
CREATE INDEX keys_overlap_ends_at ON keys (overlap_ends_at) WHERE overlap_ends_at IS NOT NULL;
