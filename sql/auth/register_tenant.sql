-- Register a tenant by its business key (idempotent); returns its hash key.
CREATE OR REPLACE FUNCTION auth.register_tenant(p_tenant_bk text) RETURNS bytea
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_hk bytea;
BEGIN
    -- Control characters (newlines, NUL-like bytes, escapes) would forge log lines and
    -- terminal output wherever the name is shown.
    IF p_tenant_bk IS NULL OR pg_catalog.btrim(p_tenant_bk) = '' OR pg_catalog.length(p_tenant_bk) > 200
       OR p_tenant_bk ~ '[[:cntrl:]]' THEN
        RAISE EXCEPTION 'tenant name must be 1 to 200 characters, not blank, without control characters'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    v_hk := pg_catalog.sha256(pg_catalog.convert_to('tenant:' || p_tenant_bk, 'UTF8'));
    INSERT INTO auth.tenant_h (tenant_hk, tenant_bk, record_source)
    VALUES (v_hk, p_tenant_bk, 'pyvault:register')
    ON CONFLICT DO NOTHING;
    RETURN v_hk;
END;
$$;
COMMENT ON FUNCTION auth.register_tenant(text) IS
'Register a tenant by name (idempotent) and return its tenant_hk.';
REVOKE ALL ON FUNCTION auth.register_tenant(text) FROM public;
GRANT EXECUTE ON FUNCTION auth.register_tenant(text) TO pyvault_admin;
