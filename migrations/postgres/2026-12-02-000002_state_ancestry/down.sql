ALTER TABLE state_groups DROP COLUMN ancestry;
