-- Bumped on every lease of the destination. A sender's writes for the destination are conditioned
-- on the generation it leased, so a sender whose lease was taken over commits nothing.
ALTER TABLE outbox_destinations ADD COLUMN lease_gen BIGINT NOT NULL DEFAULT 0;
