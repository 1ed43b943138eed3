-- The initial keyturn schema for PostgreSQL, the same tables as the SQLite schema of the same
-- version. Every instant is a BIGINT count of milliseconds since the Unix epoch (UTC) and every
-- duration a BIGINT count of milliseconds. JSON is stored as TEXT, byte for byte as keyturn wrote
-- it, because an audit chain MAC covers `canonical` exactly and jsonb would reformat it.
-- Key ids and outcomes use the "C" collation, so listings sort byte by byte as on SQLite and do
-- not depend on the database's locale.

CREATE TABLE keys (
    key_id            TEXT COLLATE "C" PRIMARY KEY,
    name              TEXT    NOT NULL,
    owner             TEXT,
    scopes            TEXT    NOT NULL, -- JSON array of scope strings
    metadata          TEXT    NOT NULL, -- JSON object
    hash              BYTEA   NOT NULL, -- HMAC-SHA256 of the token, 32 bytes
    pepper_id         TEXT    NOT NULL,
    created_at        BIGINT  NOT NULL,
    expires_at        BIGINT,
    grace_ms          BIGINT  NOT NULL,
    warn_before_ms    BIGINT  NOT NULL,
    revoked_at        BIGINT,
    revocation_reason TEXT,
    rotated_at        BIGINT,
    overlap_ends_at   BIGINT,
    -- The conditional UPDATE of a rotation allows one successor per key. No unique index
    -- enforces it on predecessor_id, because a replaced successor keeps its predecessor_id.
    successor_id      TEXT,
    predecessor_id    TEXT,
    chain_started_at  BIGINT  NOT NULL,
    first_used_at     BIGINT,
    last_used_at      BIGINT,
    last_client_addr  TEXT
);

CREATE INDEX keys_owner ON keys (owner);
CREATE INDEX keys_pepper_id ON keys (pepper_id);

-- Rows are appended in commit order: every writer holds keyturn's transaction-scoped advisory
-- lock, and seq is one more than the largest seq at the time of the insert.
CREATE TABLE audit_events (
    seq         BIGINT  PRIMARY KEY,
    at          BIGINT  NOT NULL,
    event       TEXT    NOT NULL,
    key_id      TEXT,
    actor       TEXT    NOT NULL,
    client_addr TEXT,
    reason      TEXT,
    details     TEXT    NOT NULL, -- JSON
    canonical   TEXT    NOT NULL, -- NewAuditEvent::canonical(seq), the text a chain MAC covers
    mac         BYTEA             -- NULL until an audit chain key is configured
);

CREATE INDEX audit_events_key_id_seq ON audit_events (key_id, seq);
CREATE INDEX audit_events_at ON audit_events (at);

CREATE TABLE key_usage (
    key_id  TEXT COLLATE "C" NOT NULL REFERENCES keys (key_id),
    outcome TEXT COLLATE "C" NOT NULL,
    count   BIGINT NOT NULL,
    PRIMARY KEY (key_id, outcome)
);

-- The change feed: one row per key touched by a lifecycle change, read by verifier caches as
-- "seq greater than the last one seen". Writers hold the advisory lock while they insert, so
-- sequence numbers commit in increasing order; a rolled-back insert leaves a gap, never a
-- smaller number committed after a larger one.
CREATE TABLE changes (
    seq    BIGINT  GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    key_id TEXT    NOT NULL,
    at     BIGINT  NOT NULL
);
