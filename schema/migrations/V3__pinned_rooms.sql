-- Rooms created through the API with a region keep their record (and region)
-- between sessions; other rooms are deleted when their last participant leaves.
ALTER TABLE rooms ADD COLUMN pinned BOOLEAN NOT NULL DEFAULT false;
