DROP INDEX state_groups_chain_pos;
ALTER TABLE state_groups DROP COLUMN ancestry;
