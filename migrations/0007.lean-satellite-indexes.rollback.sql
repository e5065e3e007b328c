CREATE UNIQUE INDEX api_token_s_current_token_hash_idx
ON auth.api_token_s (token_hash) WHERE load_end_date IS NULL;
CREATE INDEX api_token_s_current_expiry_idx
ON auth.api_token_s (expires_at) WHERE load_end_date IS NULL AND NOT is_revoked;
