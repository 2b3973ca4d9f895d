-- The state group resolving a set of state groups together, so that the many events citing the
-- same forward extremities (concurrent knocks from one template) resolve them once.
CREATE TABLE state_merges (
    room_id TEXT NOT NULL REFERENCES rooms (room_id),
    -- the merged groups' IDs, ascending, comma-separated
    merged TEXT NOT NULL,
    group_id BIGINT NOT NULL,
    PRIMARY KEY (room_id, merged)
);
