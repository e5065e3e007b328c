-- The PL/pgSQL floor for the benchmark: the LIMIT row's index probe inside the smallest
-- function that can serve it under our security model (SECURITY DEFINER, search_path
-- pinned) with validate's result shape. No checks, no logic. What it costs over LIMIT is
-- the price of the language and the security model, which every function here pays.
CREATE SCHEMA IF NOT EXISTS bench;

CREATE OR REPLACE FUNCTION bench.validate_floor(
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
    SELECT TRUE, b.user_hk, b.tenant_hk, b.scope, b.expires_at, NULL::text
    INTO is_valid, user_hk, tenant_hk, scope, expires_at, message
    FROM auth.api_token_bridge AS b
    WHERE b.token_hash = pg_catalog.sha256(pg_catalog.convert_to(p_token, 'UTF8'));
    RETURN NEXT;
END;
$$;
COMMENT ON FUNCTION bench.validate_floor(text, text) IS
'Benchmark only: the LIMIT probe in a minimal SECURITY DEFINER PL/pgSQL function.';
