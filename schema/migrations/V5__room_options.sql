-- What CreateRoom asked for (LiveKit's CreateRoomRequest); 0 and '' are unset.
ALTER TABLE rooms ADD COLUMN max_participants INTEGER NOT NULL DEFAULT 0;
ALTER TABLE rooms ADD COLUMN departure_timeout INTEGER NOT NULL DEFAULT 0;
ALTER TABLE rooms ADD COLUMN metadata TEXT NOT NULL DEFAULT '';
