-- Bumped on every lease of the destination. A sender's writes for the destination are conditioned
-- on the generation it leased, so a sender whose lease was taken over commits nothing.
ALTER TABLE outbox_destinations ADD COLUMN lease_gen BIGINT NOT NULL DEFAULT 0;
-- How many times the destination refused the body of the current transaction (400, 413); the
-- transaction's items are parked after outbox.park_after_refusals.
ALTER TABLE outbox_destinations ADD COLUMN txn_refusals BIGINT NOT NULL DEFAULT 0;
