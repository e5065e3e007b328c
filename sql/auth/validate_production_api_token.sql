-- Validate a token for a scope, without refreshing it.
-- Hot path: a length-and-prefix check, one probe of the bridge, and no write unless
-- the usage debounce window has passed.
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
DECLARE
    v_token auth.api_token_bridge;
BEGIN
    -- The common answer in one statement, as in validate_and_refresh_api_token: a valid
    -- token with no use to record. Anything else reads the row again below.
    SELECT TRUE, b.user_hk, b.tenant_hk, b.scope, b.expires_at, 'Token is valid'
    INTO is_valid, user_hk, tenant_hk, scope, expires_at, message
    FROM auth.api_token_bridge AS b
    WHERE b.token_hash = pg_catalog.sha256(pg_catalog.convert_to(p_token, 'UTF8'))
      AND auth._is_token_shaped(p_token) AND auth._valid_as_is(b, p_required_scope);
    IF FOUND THEN
        RETURN NEXT;
        RETURN;
    END IF;

    is_valid := FALSE;  -- no row found left every output NULL
    IF NOT auth._is_token_shaped(p_token) THEN
        message := 'Token format is invalid';
        RETURN NEXT;
        RETURN;
    END IF;
    IF p_required_scope IS NULL THEN
        message := 'Required scope is missing';
        RETURN NEXT;
        RETURN;
    END IF;
    SELECT b.* INTO v_token
    FROM auth.api_token_bridge AS b
    WHERE b.token_hash = pg_catalog.sha256(pg_catalog.convert_to(p_token, 'UTF8'));
    IF NOT FOUND OR v_token.is_revoked OR pg_catalog.now() >= v_token.valid_until THEN
        SELECT r.o_message INTO message FROM auth._refusal(p_token, v_token, 'pyvault:validate') AS r;
    ELSIF NOT p_required_scope = ANY(v_token.scope) THEN
        message := 'Token lacks the required scope';
    ELSE
        is_valid := TRUE;
        user_hk := v_token.user_hk;
        tenant_hk := v_token.tenant_hk;
        scope := v_token.scope;
        expires_at := v_token.expires_at;
        message := 'Token is valid';
        IF pg_catalog.now() >= v_token.record_use_after
           AND NOT pg_catalog.current_setting('transaction_read_only')::boolean THEN
            PERFORM auth._record_token_use(
                v_token.token_hash, v_token.api_token_hk, v_token.tenant_hk,
                v_token.token_type, v_token.predecessor_hk
            );
        END IF;
    END IF;
    RETURN NEXT;
END;
$$;
COMMENT ON FUNCTION auth.validate_production_api_token(text, text) IS
'Validate a token for a scope. Returns is_valid and, when valid, the user, tenant, scope '
'and expiry; message says why a token is refused. Never raises on bad input.';
REVOKE ALL ON FUNCTION auth.validate_production_api_token(text, text) FROM public;
GRANT EXECUTE ON FUNCTION auth.validate_production_api_token(text, text)
TO pyvault_api, pyvault_admin;
