-- Webhooks, the same tables as the SQLite schema of the same version. Every audit row of a
-- notifiable event type also writes one outbox row in the same transaction, and one delivery
-- row for each enabled endpoint whose filter matches it. Signing secrets are stored sealed under
-- the webhook key, which lives outside the database.

CREATE TABLE webhook_outbox (
    msg_id    TEXT COLLATE "C" PRIMARY KEY, -- the webhook-id header, the same on every attempt
    audit_seq BIGINT  NOT NULL UNIQUE,
    event     TEXT    NOT NULL,
    key_id    TEXT,
    at        BIGINT  NOT NULL,
    payload   TEXT    NOT NULL,             -- the JSON body, sent byte for byte
    -- Set for an event recorded once per key, so the database rejects a second one. UNIQUE
    -- allows any number of NULLs.
    once_key  TEXT    UNIQUE
);

CREATE TABLE webhook_endpoints (
    endpoint_id     TEXT COLLATE "C" PRIMARY KEY,
    url             TEXT    NOT NULL,
    events          TEXT    NOT NULL, -- JSON array of event types; an empty array means all
    allow_private   BOOLEAN NOT NULL,
    enabled         BOOLEAN NOT NULL,
    disabled_reason TEXT,
    created_at      BIGINT  NOT NULL
);

CREATE TABLE webhook_secrets (
    endpoint_id TEXT COLLATE "C" NOT NULL REFERENCES webhook_endpoints (endpoint_id) ON DELETE CASCADE,
    secret_no   BIGINT  NOT NULL,
    sealed      BYTEA   NOT NULL, -- XChaCha20-Poly1305 nonce, ciphertext and tag
    created_at  BIGINT  NOT NULL,
    expires_at  BIGINT,           -- NULL while the secret is the newest
    PRIMARY KEY (endpoint_id, secret_no)
);

-- state is 'pending', 'delivered' or 'dead'. A pending row is leased to one worker until
-- lease_until; each endpoint's pending rows are sent in audit_seq order.
CREATE TABLE webhook_deliveries (
    endpoint_id     TEXT COLLATE "C" NOT NULL REFERENCES webhook_endpoints (endpoint_id) ON DELETE CASCADE,
    msg_id          TEXT COLLATE "C" NOT NULL REFERENCES webhook_outbox (msg_id),
    audit_seq       BIGINT  NOT NULL,
    state           TEXT    NOT NULL,
    attempts        BIGINT  NOT NULL,
    next_attempt_at BIGINT  NOT NULL,
    lease_owner     TEXT,
    lease_until     BIGINT,
    last_attempt_at BIGINT,
    last_result     TEXT,
    PRIMARY KEY (endpoint_id, msg_id)
);

CREATE INDEX webhook_deliveries_state ON webhook_deliveries (state, endpoint_id, audit_seq);
