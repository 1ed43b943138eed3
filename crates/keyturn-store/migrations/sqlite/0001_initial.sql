-- The initial keyturn schema. Every instant is an INTEGER count of milliseconds since the Unix
-- epoch (UTC) and every duration an INTEGER count of milliseconds.

CREATE TABLE keys (
    key_id            TEXT    PRIMARY KEY NOT NULL,
    name              TEXT    NOT NULL,
    owner             TEXT,
    scopes            TEXT    NOT NULL, -- JSON array of scope strings
    metadata          TEXT    NOT NULL, -- JSON object
    hash              BLOB    NOT NULL, -- HMAC-SHA256 of the token, 32 bytes
    pepper_id         TEXT    NOT NULL,
    created_at        INTEGER NOT NULL,
    expires_at        INTEGER,
    grace_ms          INTEGER NOT NULL,
    warn_before_ms    INTEGER NOT NULL,
    revoked_at        INTEGER,
    revocation_reason TEXT,
    rotated_at        INTEGER,
    overlap_ends_at   INTEGER,
    -- The conditional UPDATE of a rotation allows one successor per key. No unique index
    -- enforces it on predecessor_id, because a replaced successor keeps its predecessor_id.
    successor_id      TEXT,
    predecessor_id    TEXT,
    chain_started_at  INTEGER NOT NULL,
    first_used_at     INTEGER,
    last_used_at      INTEGER,
    last_client_addr  TEXT
);

CREATE INDEX keys_owner ON keys (owner);
CREATE INDEX keys_pepper_id ON keys (pepper_id);

-- Rows are appended in commit order: every writer holds the write lock, and seq is one more
-- than the largest seq at the time of the insert.
CREATE TABLE audit_events (
    seq         INTEGER PRIMARY KEY NOT NULL,
    at          INTEGER NOT NULL,
    event       TEXT    NOT NULL,
    key_id      TEXT,
    actor       TEXT    NOT NULL,
    client_addr TEXT,
    reason      TEXT,
    details     TEXT    NOT NULL, -- JSON
    canonical   TEXT    NOT NULL, -- NewAuditEvent::canonical(seq), the text a chain MAC covers
    mac         BLOB              -- NULL until an audit chain key is configured
);

CREATE INDEX audit_events_key_id_seq ON audit_events (key_id, seq);
CREATE INDEX audit_events_at ON audit_events (at);

CREATE TABLE key_usage (
    key_id  TEXT    NOT NULL REFERENCES keys (key_id),
    outcome TEXT    NOT NULL,
    count   INTEGER NOT NULL,
    PRIMARY KEY (key_id, outcome)
);

-- The change feed: one row per key touched by a lifecycle change, read by verifier caches.
CREATE TABLE changes (
    seq    INTEGER PRIMARY KEY AUTOINCREMENT,
    key_id TEXT    NOT NULL,
    at     INTEGER NOT NULL
);
