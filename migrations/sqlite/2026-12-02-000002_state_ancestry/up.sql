-- Every chain a group's state draws on, from the group's own up to the root, as
-- "chain:position" pairs separated by commas: reading a group's ancestry is one row, not a
-- recursive walk. NULL for groups made before this column (read the walk for those).
ALTER TABLE state_groups ADD COLUMN ancestry TEXT;
-- The group at a chain position: where merged groups are based.
CREATE UNIQUE INDEX state_groups_chain_pos ON state_groups (chain_id, chain_pos);
