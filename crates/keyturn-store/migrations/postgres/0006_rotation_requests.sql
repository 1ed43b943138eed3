-- Rotation requests and the scheduler of time-caused lifecycle events, the same columns,
-- indexes and tables as the SQLite schema of the same version.
--
-- rotation_requested_at and rotation_deadline record an operator's request that a key be
-- rotated by a deadline; the request also moves expires_at to the deadline when it is later,
-- and expires_before_request keeps the expiry it had, from which a successor's lifetime counts.
--
-- The scheduler finds keys whose boundary falls in a range with the indexes below, one per
-- boundary: the start of the warning window (expires_at - warn_before_ms), expiry, the end of
-- grace (expires_at + grace_ms), the end of the overlap window (indexed by version 3) and the
-- rotation deadline. Its queries repeat each indexed expression exactly, so the index serves them.
--
-- recorded_events guards the events recorded once per key: the row is inserted in the same
-- transaction as the audit row, and the UNIQUE constraint rejects a second one even when two
-- writers race. The rows of events recorded before this version are copied in, so none is
-- recorded twice after the upgrade.
--
-- scheduler_state holds the high-water mark of the scheduler: the instant up to which every
-- boundary has been looked at, shared by every instance.

ALTER TABLE keys ADD COLUMN rotation_requested_at BIGINT;
ALTER TABLE keys ADD COLUMN rotation_deadline BIGINT;
ALTER TABLE keys ADD COLUMN expires_before_request BIGINT;

CREATE INDEX keys_warning_starts_at ON keys ((expires_at - warn_before_ms)) WHERE expires_at IS NOT NULL;
CREATE INDEX keys_expires_at ON keys (expires_at) WHERE expires_at IS NOT NULL;
CREATE INDEX keys_grace_ends_at ON keys ((expires_at + grace_ms)) WHERE expires_at IS NOT NULL;
CREATE INDEX keys_rotation_deadline ON keys (rotation_deadline) WHERE rotation_deadline IS NOT NULL;

CREATE TABLE recorded_events (
    key_id TEXT COLLATE "C" NOT NULL,
    event  TEXT COLLATE "C" NOT NULL,
    seq    BIGINT NOT NULL, -- the audit row that recorded it
    UNIQUE (key_id, event)
);

INSERT INTO recorded_events (key_id, event, seq)
SELECT key_id, event, MIN(seq) FROM audit_events
WHERE key_id IS NOT NULL AND event IN ('authn_token_grace_entered', 'authn_token_expired', 'authn_token_superseded_used')
GROUP BY key_id, event;

CREATE TABLE scheduler_state (
    name       TEXT    PRIMARY KEY,
    high_water BIGINT NOT NULL -- milliseconds since the Unix epoch
);
