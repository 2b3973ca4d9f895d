-- The room engine keeps each room's state in memory; every write to a room's state bumps this
-- number, so an instance whose memory is older (another knockd wrote the room) reloads it.
ALTER TABLE rooms ADD COLUMN version BIGINT NOT NULL DEFAULT 0;
