DROP INDEX auth.token_refresh_event_token_idx;
CREATE INDEX token_refresh_event_token_idx ON auth.token_refresh_event (api_token_hk);
ALTER TABLE auth.api_token_usage RESET (fillfactor);
ALTER TABLE auth.api_token_bridge RESET (fillfactor);
DROP INDEX auth.api_token_bridge_head_expiry_idx;
DROP INDEX auth.api_token_bridge_rotated_idx;
CREATE INDEX api_token_bridge_dead_secret_idx ON auth.api_token_bridge (valid_until)
WHERE successor_secret IS NOT NULL;
DROP TABLE auth.retention_policy;
DROP TABLE auth.spent_token;
-- security_event's foreign key to the hub is not restored: events of tokens that
-- auth.prune_token_history removed would violate it.
