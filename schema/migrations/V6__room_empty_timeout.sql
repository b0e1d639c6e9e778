-- CreateRoom's empty_timeout: seconds an unjoined room is kept (0: LiveKit's 300).
ALTER TABLE rooms ADD COLUMN empty_timeout INTEGER NOT NULL DEFAULT 0;
