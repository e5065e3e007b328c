-- The writes of auth._handle_token_reuse, once the policy's action is known: revoke the
-- family (REVOKE_FAMILY) or erase the kept successor (REJECT), and record the event.
CREATE OR REPLACE FUNCTION auth._handle_token_reuse_now(
    p_api_token_hk bytea,
    p_family_hk bytea,
    p_tenant_hk bytea,
    p_action text,
    p_source text
) RETURNS integer
LANGUAGE plpgsql
AS $$
DECLARE
    v_revoked integer := 0;
BEGIN
    IF p_action = 'REVOKE_FAMILY' THEN
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
        pg_catalog.jsonb_build_object('action', p_action, 'source', p_source)
    );
    RETURN v_revoked;
END;
$$;
REVOKE ALL ON FUNCTION auth._handle_token_reuse_now(bytea, bytea, bytea, text, text) FROM public;
