-- Register a user of a tenant by its business key (idempotent); returns its hash key.
CREATE OR REPLACE FUNCTION auth.register_user(p_tenant_hk bytea, p_user_bk text) RETURNS bytea
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_hk bytea;
BEGIN
    -- Control characters (newlines, NUL-like bytes, escapes) would forge log lines and
    -- terminal output wherever the name is shown.
    IF p_user_bk IS NULL OR pg_catalog.btrim(p_user_bk) = '' OR pg_catalog.length(p_user_bk) > 200
       OR p_user_bk ~ '[[:cntrl:]]' THEN
        RAISE EXCEPTION 'user name must be 1 to 200 characters, not blank, without control characters'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF NOT EXISTS (SELECT FROM auth.tenant_h AS t WHERE t.tenant_hk = p_tenant_hk) THEN
        RAISE EXCEPTION 'unknown tenant'
            USING ERRCODE = 'foreign_key_violation', HINT = 'Call auth.register_tenant first.';
    END IF;
    v_hk := pg_catalog.sha256(p_tenant_hk || pg_catalog.convert_to('user:' || p_user_bk, 'UTF8'));
    INSERT INTO auth.user_h (user_hk, user_bk, tenant_hk, record_source)
    VALUES (v_hk, p_user_bk, p_tenant_hk, 'pyvault:register')
    ON CONFLICT DO NOTHING;
    RETURN v_hk;
END;
$$;
COMMENT ON FUNCTION auth.register_user(bytea, text) IS
'Register a user of a tenant by name (idempotent) and return its user_hk.';
REVOKE ALL ON FUNCTION auth.register_user(bytea, text) FROM public;
GRANT EXECUTE ON FUNCTION auth.register_user(bytea, text) TO pyvault_admin;
