-- The room an outbound item belongs to, so that the admin API shows a moderator only the items
-- of rooms they moderate. NULL for an item of no known room (shown to the server admin only).
ALTER TABLE outbox ADD COLUMN room_id TEXT;
UPDATE outbox SET room_id = json_extract(payload, '$.room_id') WHERE kind = 'pdu';
UPDATE outbox SET room_id = (
    SELECT knocks.room_id FROM knocks WHERE knocks.knock_id = json_extract(outbox.payload, '$.knock_id')
) WHERE kind = 'invite';
