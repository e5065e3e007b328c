-- depends: 0010.token-lifecycle
-- How long validate-and-refresh waits for a due token's row lock before it answers the
-- (still valid) token with REFRESH_BUSY instead of a refresh: the seed's one-transaction
-- batch holds its rows for seconds, and behind a pool's statement_timeout a wait becomes
-- a failed request for a valid token.

ALTER TABLE auth.token_refresh_policy
ADD COLUMN refresh_lock_wait interval NOT NULL DEFAULT '100 milliseconds'
CHECK (refresh_lock_wait > '0 seconds' AND refresh_lock_wait <= '1 minute');
COMMENT ON COLUMN auth.token_refresh_policy.refresh_lock_wait IS
'validate_and_refresh_api_token waits at most this long for a due token''s row lock; '
'then the token is answered valid with REFRESH_BUSY and a later use refreshes it.';
