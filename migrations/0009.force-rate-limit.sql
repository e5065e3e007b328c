-- depends: 0008.lean-batch-writes
-- Forced refresh through the API role is limited per token family: at most one per
-- force_min_interval (admins unaffected). Without it, a login holding pyvault_api could
-- force thousands of rotations a second, each leaving vault rows behind.

ALTER TABLE auth.token_refresh_policy
ADD COLUMN force_min_interval interval NOT NULL DEFAULT '1 minute'
CHECK (force_min_interval >= '0 seconds');
COMMENT ON COLUMN auth.token_refresh_policy.force_min_interval IS
'A forced refresh by a login that is not pyvault_admin is refused (FORCE_RATE_LIMITED) '
'when the token was issued or last refreshed less than this long ago.';
