-- Validate a token and, when it is due, refresh it in the same call, returning the new
-- token for the X-New-Token header. Never raises on bad input; a failed refresh leaves
-- the (still valid) token valid and says REFRESH_FAILED.
--
-- The hot path, held to 0.95x the PL/pgSQL floor (bench/sql/plpgsql_floor.sql): the
-- common answer, a valid token with nothing to record, refresh or hand out, comes from
-- one statement (auth._is_quiet: two comparisons against the precomputed quiet_until),
-- and every other case from the full path, which reads the row again and decides
-- branch by branch. Every call is a transaction of its own, and PL/pgSQL sets up each
-- statement and expression it evaluates anew in each transaction, so this function
-- holds as few as it can. Instructions per call under callgrind (2026-12-02), against
-- the floor's 160k: the seven conditions before quiet_until cost 7%; a length gate in
-- front of the probe (so that a megabyte is never hashed) 1.7%, so there is none: a
-- string of any length is hashed once (sha256 of a megabyte takes about a millisecond)
-- and the full path then checks the format first; the full path's variables declared
-- here 1%; SELECT INTO the outputs and RETURN NEXT 3% more than RETURN QUERY; a
-- varchar(100) constant (the result column has no length modifier) 0.2%. The
-- comments stay out of the body: a pg_proc row over 2 kB gets compressed columns, and
-- one of those (the argument types) was decompressed on every call.
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
    RETURN QUERY
    SELECT TRUE, b.user_hk, b.tenant_hk, b.scope, b.expires_at, NULL::text, FALSE,
           'NO_REFRESH_NEEDED'::varchar, 'Token is valid'::text
    FROM auth.api_token_bridge AS b
    WHERE b.token_hash = pg_catalog.sha256(pg_catalog.convert_to(p_token, 'UTF8'))
      AND auth._is_quiet(b, p_required_scope);
    IF NOT FOUND THEN
        RETURN QUERY SELECT * FROM auth._validate_and_refresh_in_full(p_token, p_required_scope);
    END IF;
END;
$$;
COMMENT ON FUNCTION auth.validate_and_refresh_api_token(text, text) IS
'Validate a token and refresh it when it is within its refresh threshold (or predicted '
'idle). new_token is set when the client must switch to a new secret; refresh_reason is '
'one of the documented codes. Never raises on bad input.';
REVOKE ALL ON FUNCTION auth.validate_and_refresh_api_token(text, text) FROM public;
GRANT EXECUTE ON FUNCTION auth.validate_and_refresh_api_token(text, text)
TO pyvault_api, pyvault_admin;
