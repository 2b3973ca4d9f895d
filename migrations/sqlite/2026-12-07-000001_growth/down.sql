DROP INDEX outbox_parked;
DROP INDEX inbound_txns_received;
