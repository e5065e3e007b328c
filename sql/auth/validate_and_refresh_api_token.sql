-- Validate a token and, when it is due, refresh it in the same call, returning the new
-- token for the X-New-Token header. Never raises on bad input; a failed refresh leaves
-- the (still valid) token valid and says REFRESH_FAILED.
CREATE OR REPLACE FUNCTION auth.validate_and_refresh_api_token(
    p_token text,
    p_required_scope text DEFAULT 'api:read'
) RETURNS TABLE (
    is_valid boolean,
    user_hk bytea,
    tenant_hk bytea,
    scope text[],
    expires_at timestamptz,
    new_token text,
    was_refreshed boolean,
    refresh_reason varchar(100),
    message text
)
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    -- The common answer in one statement: a valid token with no use to record, nothing
    -- to refresh and no successor to hand out (auth._is_quiet). Every call is a
    -- transaction of its own, and PL/pgSQL sets up each expression it evaluates anew in
    -- each transaction, so this path holds as few as it can: a length gate (a megabyte
    -- of text is never hashed; the prefix is checked in full below, and a string of the
    -- right length with another prefix finds no row), one probe with two comparisons,
    -- RETURN QUERY (no copy through the output variables) and FOUND. Measured with
    -- callgrind against the PL/pgSQL floor of bench/sql/plpgsql_floor.sql: the prefix
    -- check here cost 3%, the conditions before quiet_until 7%, the full path's
    -- variables in this function 1%. Any other case takes the full path.
    IF pg_catalog.octet_length(p_token) = 73 THEN
        RETURN QUERY
        SELECT TRUE, b.user_hk, b.tenant_hk, b.scope, b.expires_at, NULL::text, FALSE,
               'NO_REFRESH_NEEDED'::varchar(100), 'Token is valid'::text
        FROM auth.api_token_bridge AS b
        WHERE b.token_hash = pg_catalog.sha256(pg_catalog.convert_to(p_token, 'UTF8'))
          AND auth._is_quiet(b, p_required_scope);
        IF FOUND THEN
            RETURN;
        END IF;
    END IF;
    RETURN QUERY SELECT * FROM auth._validate_and_refresh_in_full(p_token, p_required_scope);
END;
$$;
COMMENT ON FUNCTION auth.validate_and_refresh_api_token(text, text) IS
'Validate a token and refresh it when it is within its refresh threshold (or predicted '
'idle). new_token is set when the client must switch to a new secret; refresh_reason is '
'one of the documented codes. Never raises on bad input.';
REVOKE ALL ON FUNCTION auth.validate_and_refresh_api_token(text, text) FROM public;
GRANT EXECUTE ON FUNCTION auth.validate_and_refresh_api_token(text, text)
TO pyvault_api, pyvault_admin;
