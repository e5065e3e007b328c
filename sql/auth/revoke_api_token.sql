-- Revoke a token and every other generation of its rotation family.
CREATE OR REPLACE FUNCTION auth.revoke_api_token(
    p_token text,
    p_reason text DEFAULT 'revoked by administrator'
) RETURNS boolean
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_token auth.api_token_bridge;
    v_count integer;
BEGIN
    IF NOT auth._is_token_shaped(p_token) THEN
        RETURN FALSE;
    END IF;
    SELECT b.* INTO v_token
    FROM auth.api_token_bridge AS b
    WHERE b.token_hash = pg_catalog.sha256(pg_catalog.convert_to(p_token, 'UTF8'));
    IF NOT FOUND OR v_token.is_revoked THEN
        RETURN FALSE;
    END IF;
    v_count := auth._revoke_family(
        v_token.family_hk,
        pg_catalog.left(coalesce(nullif(pg_catalog.btrim(p_reason), ''), 'revoked'), 200),
        'pyvault:revoke'
    );
    INSERT INTO auth.security_event (
        event_type, api_token_hk, family_hk, tenant_hk, tokens_revoked
    ) VALUES (
        'TOKEN_REVOKED', v_token.api_token_hk, v_token.family_hk, v_token.tenant_hk, v_count
    );
    RETURN v_count > 0;
END;
$$;
COMMENT ON FUNCTION auth.revoke_api_token(text, text) IS
'Revoke a token and every generation of its rotation family. Returns false for an '
'unknown, malformed or already revoked token.';
REVOKE ALL ON FUNCTION auth.revoke_api_token(text, text) FROM public;
GRANT EXECUTE ON FUNCTION auth.revoke_api_token(text, text) TO pyvault_admin;
