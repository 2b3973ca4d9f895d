ALTER TABLE outbox DROP COLUMN room_id;
