-- Webhooks. Every audit row of a notifiable event type also writes one outbox row in the same
-- transaction, and one delivery row for each enabled endpoint whose filter matches it. Signing
-- secrets are stored sealed under the webhook key, which lives outside the database.

CREATE TABLE webhook_outbox (
    msg_id    TEXT    PRIMARY KEY NOT NULL, -- the webhook-id header, the same on every attempt
    audit_seq INTEGER NOT NULL UNIQUE,
    event     TEXT    NOT NULL,
    key_id    TEXT,
    at        INTEGER NOT NULL,
    payload   TEXT    NOT NULL,             -- the JSON body, sent byte for byte
    -- Set for an event recorded once per key, so the database rejects a second one. UNIQUE
    -- allows any number of NULLs.
    once_key  TEXT    UNIQUE
);

CREATE TABLE webhook_endpoints (
    endpoint_id     TEXT    PRIMARY KEY NOT NULL,
    url             TEXT    NOT NULL,
    events          TEXT    NOT NULL, -- JSON array of event types; an empty array means all
    allow_private   INTEGER NOT NULL,
    enabled         INTEGER NOT NULL,
    disabled_reason TEXT,
    created_at      INTEGER NOT NULL
);

CREATE TABLE webhook_secrets (
    endpoint_id TEXT    NOT NULL REFERENCES webhook_endpoints (endpoint_id) ON DELETE CASCADE,
    secret_no   INTEGER NOT NULL,
    sealed      BLOB    NOT NULL, -- XChaCha20-Poly1305 nonce, ciphertext and tag
    created_at  INTEGER NOT NULL,
    expires_at  INTEGER,          -- NULL while the secret is the newest
    PRIMARY KEY (endpoint_id, secret_no)
);

-- state is 'pending', 'delivered' or 'dead'. A pending row is leased to one worker until
-- lease_until; each endpoint's pending rows are sent in audit_seq order.
CREATE TABLE webhook_deliveries (
    endpoint_id     TEXT    NOT NULL REFERENCES webhook_endpoints (endpoint_id) ON DELETE CASCADE,
    msg_id          TEXT    NOT NULL REFERENCES webhook_outbox (msg_id),
    audit_seq       INTEGER NOT NULL,
    state           TEXT    NOT NULL,
    attempts        INTEGER NOT NULL,
    next_attempt_at INTEGER NOT NULL,
    lease_owner     TEXT,
    lease_until     INTEGER,
    last_attempt_at INTEGER,
    last_result     TEXT,
    PRIMARY KEY (endpoint_id, msg_id)
);

CREATE INDEX webhook_deliveries_state ON webhook_deliveries (state, endpoint_id, audit_seq);
