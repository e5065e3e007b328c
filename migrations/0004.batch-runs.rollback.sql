DROP INDEX auth.api_token_bridge_live_expiry_idx;
DROP INDEX auth.api_token_bridge_refresh_due_idx;
ALTER TABLE auth.api_token_bridge DROP COLUMN refresh_enqueued_at;
CREATE INDEX api_token_bridge_refresh_due_idx ON auth.api_token_bridge (refresh_after)
WHERE NOT is_revoked AND successor_hk IS NULL;
DROP TABLE auth.token_refresh_batch_run CASCADE;
