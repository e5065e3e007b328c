ALTER TABLE auth.token_refresh_policy DROP COLUMN force_min_interval;
