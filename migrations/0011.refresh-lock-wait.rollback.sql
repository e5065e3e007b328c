ALTER TABLE auth.token_refresh_policy DROP COLUMN refresh_lock_wait;
