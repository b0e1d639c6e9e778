-- Rooms: one row per room name; `sid` is LiveKit's room sid (RM_...).
CREATE TABLE rooms (
    name        TEXT PRIMARY KEY,
    sid         TEXT NOT NULL UNIQUE,
    region      TEXT,
    node        TEXT,
    created_at  TIMESTAMPTZ NOT NULL
);

-- Tokens minted through POST /v1/tokens, kept so they can be listed and revoked.
CREATE TABLE tokens (
    id          TEXT PRIMARY KEY,
    api_key     TEXT NOT NULL,
    room        TEXT NOT NULL,
    identity    TEXT NOT NULL,
    grants      JSONB NOT NULL,
    issued_at   TIMESTAMPTZ NOT NULL,
    expires_at  TIMESTAMPTZ NOT NULL,
    revoked_at  TIMESTAMPTZ
);
CREATE INDEX tokens_room_idx ON tokens (room);
