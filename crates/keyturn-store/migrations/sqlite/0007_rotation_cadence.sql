-- The rotation cadence of named policies: the scheduler requests the rotation of each key of a
-- policy with rotate_every once the key is that old. It finds the candidates, the keys of one
-- policy created at or before an instant that are not revoked, not rotated and have no rotation
-- request yet, with this partial index. A key leaves the index when it receives its request, so
-- the query reads the keys still waiting for one rather than every key of the policy. The
-- scheduler's query repeats the index's conditions exactly, so the index serves it.

CREATE INDEX keys_rotation_cadence ON keys (policy, created_at, key_id)
    WHERE revoked_at IS NULL AND successor_id IS NULL AND rotation_requested_at IS NULL;
