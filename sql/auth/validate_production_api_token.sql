-- Validate a token for a scope, without refreshing it.
-- The common answer from one statement, as in validate_and_refresh_api_token (whose
-- comment gives the costs): a valid token with nothing to do. Any other case takes the
-- full path, which writes nothing unless the usage debounce window has passed; a token
-- due for refresh or with a successor kept is valid there all the same.
CREATE OR REPLACE FUNCTION auth.validate_production_api_token(
    p_token text,
    p_required_scope text DEFAULT 'api:read'
) RETURNS TABLE (
    is_valid boolean,
    user_hk bytea,
    tenant_hk bytea,
    scope text[],
    expires_at timestamptz,
    message text
)
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN QUERY
    SELECT TRUE, b.user_hk, b.tenant_hk, b.scope, b.expires_at, 'Token is valid'::text
    FROM auth.api_token_bridge AS b
    WHERE b.token_hash = pg_catalog.sha256(pg_catalog.convert_to(p_token, 'UTF8'))
      AND auth._is_quiet(b, p_required_scope);
    IF NOT FOUND THEN
        RETURN QUERY SELECT * FROM auth._validate_in_full(p_token, p_required_scope);
    END IF;
END;
$$;
COMMENT ON FUNCTION auth.validate_production_api_token(text, text) IS
'Validate a token for a scope. Returns is_valid and, when valid, the user, tenant, scope '
'and expiry; message says why a token is refused. Never raises on bad input.';
REVOKE ALL ON FUNCTION auth.validate_production_api_token(text, text) FROM public;
GRANT EXECUTE ON FUNCTION auth.validate_production_api_token(text, text)
TO pyvault_api, pyvault_admin;
