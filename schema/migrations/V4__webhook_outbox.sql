-- Webhook deliveries waiting, one row per event and URL, oldest first per URL
-- and room. Delivered and given-up rows are deleted, so the lowest seq of a
-- (url, room) is its head of line.
CREATE TABLE webhook_outbox (
    id TEXT PRIMARY KEY,
    seq BIGSERIAL NOT NULL,
    url TEXT NOT NULL,
    room TEXT NOT NULL,
    body TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at TIMESTAMPTZ NOT NULL,
    claimed_until TIMESTAMPTZ
);
CREATE INDEX webhook_outbox_line ON webhook_outbox (url, room, seq);
CREATE INDEX webhook_outbox_seq ON webhook_outbox (seq);
