-- Admin tokens may expire (knockd admin token create --expires-in); NULL never does.
ALTER TABLE admin_tokens ADD COLUMN expires_ms BIGINT;
