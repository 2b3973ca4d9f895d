-- knockd schema, version 1 (SQLite). Keep in step with migrations/postgres.
CREATE TABLE rooms (
    room_id TEXT PRIMARY KEY,
    room_version TEXT NOT NULL,
    creator TEXT NOT NULL,
    created_ms BIGINT NOT NULL,
    is_public BOOLEAN NOT NULL DEFAULT FALSE,
    -- a state group equal to the room's current state
    current_group BIGINT
);

CREATE TABLE events (
    stream_ordering INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id TEXT NOT NULL UNIQUE,
    room_id TEXT NOT NULL REFERENCES rooms (room_id),
    event_type TEXT NOT NULL,
    state_key TEXT,
    sender TEXT NOT NULL,
    origin_server_ts BIGINT NOT NULL,
    depth BIGINT NOT NULL,
    status TEXT NOT NULL,
    state_before BIGINT,
    state_after BIGINT,
    pdu TEXT NOT NULL
);
CREATE INDEX events_room_stream ON events (room_id, stream_ordering);

CREATE TABLE forward_extremities (
    room_id TEXT NOT NULL REFERENCES rooms (room_id),
    event_id TEXT NOT NULL,
    depth BIGINT NOT NULL,
    PRIMARY KEY (room_id, event_id)
);
CREATE INDEX forward_extremities_depth ON forward_extremities (room_id, depth);

CREATE TABLE state_chains (
    chain_id INTEGER PRIMARY KEY AUTOINCREMENT,
    room_id TEXT NOT NULL REFERENCES rooms (room_id),
    base_group BIGINT,
    tip_pos BIGINT NOT NULL
);

CREATE TABLE state_groups (
    group_id INTEGER PRIMARY KEY AUTOINCREMENT,
    room_id TEXT NOT NULL REFERENCES rooms (room_id),
    chain_id BIGINT NOT NULL REFERENCES state_chains (chain_id),
    chain_pos BIGINT NOT NULL,
    parent_group BIGINT
);

CREATE TABLE state_deltas (
    chain_id BIGINT NOT NULL REFERENCES state_chains (chain_id),
    event_type TEXT NOT NULL,
    state_key TEXT NOT NULL,
    chain_pos BIGINT NOT NULL,
    group_id BIGINT NOT NULL,
    event_id TEXT NOT NULL,
    PRIMARY KEY (chain_id, event_type, state_key, chain_pos)
);
CREATE INDEX state_deltas_chain_pos ON state_deltas (chain_id, chain_pos);
-- Lookups of one key through a group's ancestry start from the key.
CREATE INDEX state_deltas_key ON state_deltas (event_type, state_key, chain_id, chain_pos);

CREATE TABLE current_state (
    room_id TEXT NOT NULL REFERENCES rooms (room_id),
    event_type TEXT NOT NULL,
    state_key TEXT NOT NULL,
    event_id TEXT NOT NULL,
    membership TEXT,
    PRIMARY KEY (room_id, event_type, state_key)
);
CREATE INDEX current_state_membership ON current_state (room_id, membership);

-- Joined members per server, kept with current state, so fan-out never scans the member list.
CREATE TABLE room_servers (
    room_id TEXT NOT NULL REFERENCES rooms (room_id),
    server_name TEXT NOT NULL,
    joined BIGINT NOT NULL,
    PRIMARY KEY (room_id, server_name)
);

CREATE TABLE local_users (
    user_id TEXT PRIMARY KEY,
    display_name TEXT,
    avatar_url TEXT,
    created_ms BIGINT NOT NULL
);

CREATE TABLE admin_tokens (
    token_id TEXT PRIMARY KEY,
    token_hash TEXT NOT NULL UNIQUE,
    user_id TEXT NOT NULL REFERENCES local_users (user_id),
    label TEXT,
    created_ms BIGINT NOT NULL,
    revoked_ms BIGINT
);

CREATE TABLE server_keys (
    server_name TEXT NOT NULL,
    key_id TEXT NOT NULL,
    verify_key TEXT NOT NULL,
    valid_until_ms BIGINT NOT NULL,
    expired_ms BIGINT,
    fetched_ms BIGINT NOT NULL,
    PRIMARY KEY (server_name, key_id)
);

CREATE TABLE knocks (
    knock_id INTEGER PRIMARY KEY AUTOINCREMENT,
    room_id TEXT NOT NULL REFERENCES rooms (room_id),
    user_id TEXT NOT NULL,
    event_id TEXT NOT NULL,
    origin_server TEXT NOT NULL,
    status TEXT NOT NULL,
    reason TEXT,
    display_name TEXT,
    avatar_url TEXT,
    content_redacted BOOLEAN NOT NULL DEFAULT FALSE,
    knock_room_state TEXT NOT NULL,
    received_ms BIGINT NOT NULL,
    updated_ms BIGINT NOT NULL
);
CREATE UNIQUE INDEX knocks_one_pending ON knocks (room_id, user_id) WHERE status = 'pending';
CREATE INDEX knocks_status_received ON knocks (status, received_ms, knock_id);
CREATE INDEX knocks_room_user ON knocks (room_id, user_id);
CREATE INDEX knocks_event ON knocks (event_id);
CREATE INDEX knocks_origin ON knocks (origin_server, knock_id);

CREATE TABLE decisions (
    decision_id INTEGER PRIMARY KEY AUTOINCREMENT,
    knock_id BIGINT NOT NULL REFERENCES knocks (knock_id),
    room_id TEXT NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    reason TEXT,
    decided_ms BIGINT NOT NULL,
    event_id TEXT,
    delivery TEXT NOT NULL,
    delivery_error TEXT
);
CREATE INDEX decisions_knock ON decisions (knock_id);

-- Outbound federation, one row per destination: whoever holds the lease sends; a transaction in
-- flight keeps its txn_id and exact body until the destination answers.
CREATE TABLE outbox_destinations (
    destination TEXT PRIMARY KEY,
    lease_owner TEXT,
    lease_until_ms BIGINT NOT NULL DEFAULT 0,
    next_attempt_ms BIGINT NOT NULL DEFAULT 0,
    backoff_ms BIGINT NOT NULL DEFAULT 0,
    failing_since_ms BIGINT,
    txn_id TEXT,
    txn_body TEXT,
    last_error TEXT
);

CREATE TABLE outbox (
    item_id INTEGER PRIMARY KEY AUTOINCREMENT,
    destination TEXT NOT NULL REFERENCES outbox_destinations (destination),
    kind TEXT NOT NULL,
    payload TEXT NOT NULL,
    created_ms BIGINT NOT NULL,
    txn_id TEXT,
    parked_ms BIGINT,
    last_error TEXT
);
CREATE INDEX outbox_destination ON outbox (destination, item_id);

-- Answers to inbound /send transactions, replayed when an origin retries a txnId.
CREATE TABLE inbound_txns (
    origin TEXT NOT NULL,
    txn_id TEXT NOT NULL,
    response TEXT NOT NULL,
    received_ms BIGINT NOT NULL,
    PRIMARY KEY (origin, txn_id)
);
