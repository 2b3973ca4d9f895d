-- Housekeeping deletes old inbound transaction answers and old parked outbox items by age.
CREATE INDEX inbound_txns_received ON inbound_txns (received_ms);
CREATE INDEX outbox_parked ON outbox (parked_ms) WHERE parked_ms IS NOT NULL;
