-- Issue a new API token for a user. The plaintext is returned once and never stored.
CREATE OR REPLACE FUNCTION auth.generate_production_api_token(
    p_user_hk bytea,
    p_tenant_hk bytea,
    p_scope text[] DEFAULT '{api:read}',
    p_token_type text DEFAULT 'PRODUCTION',
    p_expires_in interval DEFAULT NULL
) RETURNS TABLE (token text, api_token_hk bytea, expires_at timestamptz)
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_policy auth.token_refresh_policy;
    v_issued record;
BEGIN
    IF NOT EXISTS (
        SELECT FROM auth.user_h AS u WHERE u.user_hk = p_user_hk AND u.tenant_hk = p_tenant_hk
    ) THEN
        RAISE EXCEPTION 'unknown user for this tenant'
            USING ERRCODE = 'foreign_key_violation',
                  HINT = 'Register the tenant and user with auth.register_tenant and auth.register_user.';
    END IF;
    IF p_scope IS NULL OR pg_catalog.cardinality(p_scope) = 0 OR pg_catalog.array_position(p_scope, NULL) IS NOT NULL
       OR EXISTS (SELECT FROM pg_catalog.unnest(p_scope) AS s (v) WHERE s.v !~ '^[a-z][a-z0-9_.:-]{0,63}$') THEN
        RAISE EXCEPTION 'scope must be a non-empty array of names like api:read'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    SELECT p.* INTO v_policy FROM auth.token_refresh_policy AS p WHERE p.token_type = p_token_type;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'unknown token type %', coalesce(p_token_type, 'NULL')
            USING ERRCODE = 'invalid_parameter_value', HINT = 'Use API, PRODUCTION or API_KEY.';
    END IF;
    -- Compare the moments, not the intervals: '12 months 5 days' is 365 days as an
    -- interval but 370 days from now.
    IF p_expires_in IS NOT NULL
       AND (pg_catalog.now() + p_expires_in <= pg_catalog.now()
            OR pg_catalog.now() + p_expires_in > pg_catalog.now() + v_policy.max_lifetime) THEN
        RAISE EXCEPTION 'expires_in must be positive and at most the maximum lifetime %',
            v_policy.max_lifetime
            USING ERRCODE = 'invalid_parameter_value';
    END IF;

    expires_at := pg_catalog.now() + coalesce(p_expires_in, v_policy.time_to_live);
    v_issued := auth._issue_token(
        p_user_hk, p_tenant_hk, p_scope, p_token_type, expires_at, 'pyvault:issue'
    );
    token := v_issued.o_token;
    api_token_hk := v_issued.o_api_token_hk;
    RETURN NEXT;
END;
$$;
COMMENT ON FUNCTION auth.generate_production_api_token(bytea, bytea, text[], text, interval) IS
'Issue a token (ovt_prod_ + 64 hex). Returns the plaintext once; stores only its sha256. '
'p_expires_in defaults to the policy time_to_live of the token type.';
REVOKE ALL ON FUNCTION auth.generate_production_api_token(bytea, bytea, text[], text, interval)
FROM public;
GRANT EXECUTE ON FUNCTION auth.generate_production_api_token(bytea, bytea, text[], text, interval)
TO pyvault_admin;
