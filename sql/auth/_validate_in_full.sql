-- validate_production_api_token for every case its one statement does not answer: a
-- malformed string, an unknown, revoked, expired or under-scoped token, a use to record,
-- or a valid token that is due for refresh, has a successor kept or a first use pending
-- (valid all the same: this function never refreshes).
CREATE OR REPLACE FUNCTION auth._validate_in_full(
    p_token text,
    p_required_scope text
) RETURNS TABLE (
    is_valid boolean,
    user_hk bytea,
    tenant_hk bytea,
    scope text[],
    expires_at timestamptz,
    message text
)
LANGUAGE plpgsql
AS $$
DECLARE
    v_token auth.api_token_bridge;
BEGIN
    is_valid := FALSE;
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
REVOKE ALL ON FUNCTION auth._validate_in_full(text, text) FROM public;
