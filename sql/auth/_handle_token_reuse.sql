-- A rotated token was presented after its grace ended: record a security event and,
-- when the policy says so, revoke the whole family (RFC 9700 4.14.2). The caller then
-- reports failure by returning normally, so the revocation commits with the statement.
-- In a read-only transaction nothing can be written; the token is refused all the same.
CREATE OR REPLACE FUNCTION auth._handle_token_reuse(
    p_api_token_hk bytea,
    p_family_hk bytea,
    p_tenant_hk bytea,
    p_token_type text,
    p_source text
) RETURNS integer
LANGUAGE plpgsql
AS $$
DECLARE
    v_action text;
    v_revoked integer := 0;
BEGIN
    IF pg_catalog.current_setting('transaction_read_only')::boolean THEN
        RETURN 0;
    END IF;
    SELECT p.reuse_action INTO STRICT v_action
    FROM auth.token_refresh_policy AS p
    WHERE p.token_type = p_token_type;
    IF v_action = 'REVOKE_FAMILY' THEN
        v_revoked := auth._revoke_family(p_family_hk, 'reuse of a rotated token', p_source);
    ELSE
        -- REJECT: the presented token is dead, so the successor kept for its holder is of
        -- no more use to anyone; erase it now rather than at the next batch run.
        UPDATE auth.api_token_bridge AS b
        SET successor_secret = NULL
        WHERE b.api_token_hk = p_api_token_hk AND b.successor_secret IS NOT NULL;
    END IF;
    INSERT INTO auth.security_event (
        event_type, api_token_hk, family_hk, tenant_hk, tokens_revoked, detail
    ) VALUES (
        'TOKEN_REUSE', p_api_token_hk, p_family_hk, p_tenant_hk, v_revoked,
        pg_catalog.jsonb_build_object('action', v_action, 'source', p_source)
    );
    RETURN v_revoked;
END;
$$;
REVOKE ALL ON FUNCTION auth._handle_token_reuse(bytea, bytea, bytea, text, text) FROM public;
