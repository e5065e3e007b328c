-- The functions that read quiet_until go with it; the older sql/ files create theirs.
DROP FUNCTION IF EXISTS auth._is_quiet(auth.api_token_bridge, text);
DROP FUNCTION IF EXISTS auth._validate_in_full(text, text);
DROP FUNCTION IF EXISTS auth._validate_and_refresh_in_full(text, text);
ALTER TABLE auth.api_token_bridge DROP COLUMN quiet_until;
