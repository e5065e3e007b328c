ALTER TABLE auth.token_refresh_outbox ADD CONSTRAINT token_refresh_outbox_api_token_hk_fkey
FOREIGN KEY (api_token_hk) REFERENCES auth.api_token_h (api_token_hk);
CREATE INDEX api_token_bridge_live_expiry_idx ON auth.api_token_bridge (expires_at)
WHERE NOT is_revoked AND successor_hk IS NULL AND refresh_enqueued_at IS NULL;
DROP INDEX auth.api_token_bridge_refresh_due_idx;
CREATE INDEX api_token_bridge_refresh_due_idx ON auth.api_token_bridge (refresh_after)
WHERE NOT is_revoked AND successor_hk IS NULL AND refresh_enqueued_at IS NULL;
