DROP INDEX auth.api_token_bridge_live_expiry_idx;
DROP TABLE auth.token_refresh_batch_run CASCADE;
