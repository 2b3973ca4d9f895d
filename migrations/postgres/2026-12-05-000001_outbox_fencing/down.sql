ALTER TABLE outbox_destinations DROP COLUMN txn_refusals;
ALTER TABLE outbox_destinations DROP COLUMN lease_gen;
