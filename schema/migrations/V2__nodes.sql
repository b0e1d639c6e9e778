-- SFU nodes: each node upserts its row every heartbeat (2 s); the gateway routes
-- only to nodes seen recently that are not draining.
CREATE TABLE nodes (
    id           TEXT PRIMARY KEY,
    region       TEXT NOT NULL,
    latitude     DOUBLE PRECISION,
    longitude    DOUBLE PRECISION,
    signal_addr  TEXT NOT NULL,
    turn_urls    JSONB NOT NULL,
    capacity     INTEGER NOT NULL,
    load         JSONB NOT NULL,
    draining     BOOLEAN NOT NULL,
    last_seen    TIMESTAMPTZ NOT NULL
);
CREATE INDEX nodes_region_idx ON nodes (region);
