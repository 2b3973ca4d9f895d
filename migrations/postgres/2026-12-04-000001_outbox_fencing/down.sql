ALTER TABLE outbox_destinations DROP COLUMN lease_gen;
