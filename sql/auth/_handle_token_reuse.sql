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
BEGIN
    IF pg_catalog.current_setting('transaction_read_only')::boolean THEN
        RETURN 0;
    END IF;
    SELECT p.reuse_action INTO STRICT v_action
    FROM auth.token_refresh_policy AS p
    WHERE p.token_type = p_token_type;
    IF pg_catalog.current_setting('transaction_isolation') <> 'read committed' THEN
        -- A caller in REPEATABLE READ or SERIALIZABLE: the token is refused all the same;
        -- if a family row changed since the snapshot, the revocation waits for the next
        -- presentation instead of failing the caller with a serialization error.
        BEGIN
            RETURN auth._handle_token_reuse_now(
                p_api_token_hk, p_family_hk, p_tenant_hk, v_action, p_source);
        EXCEPTION WHEN serialization_failure THEN
            RETURN 0;
        END;
    END IF;
    RETURN auth._handle_token_reuse_now(p_api_token_hk, p_family_hk, p_tenant_hk, v_action, p_source);
END;
$$;
REVOKE ALL ON FUNCTION auth._handle_token_reuse(bytea, bytea, bytea, text, text) FROM public;
