-- The PL/pgSQL floors for the benchmark: the LIMIT row's index probe inside the smallest
-- function that can serve it under our security model (SECURITY DEFINER, search_path
-- pinned), one with validate-and-refresh's nine result columns (DESIGN.md section 2:
-- the floor the hot path is held to) and one with validate's six. No checks, no logic.
-- What one costs over LIMIT is the price of the language, the security model and the
-- result shape, which every function here pays. RETURN QUERY is the cheapest form: a
-- SELECT INTO the output variables and RETURN NEXT cost 3% more (callgrind, 2026-12-02).
CREATE SCHEMA IF NOT EXISTS bench;

CREATE OR REPLACE FUNCTION bench.validate_and_refresh_floor(
    p_token text,
    p_required_scope text DEFAULT 'api:read'
) RETURNS TABLE (
    is_valid boolean,
    user_hk bytea,
    tenant_hk bytea,
    scope text[],
    expires_at timestamptz,
    new_token text,
    was_refreshed boolean,
    refresh_reason varchar(100),
    message text
)
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN QUERY
    SELECT TRUE, b.user_hk, b.tenant_hk, b.scope, b.expires_at, NULL::text, NULL::boolean,
           NULL::varchar(100), NULL::text
    FROM auth.api_token_bridge AS b
    WHERE b.token_hash = pg_catalog.sha256(pg_catalog.convert_to(p_token, 'UTF8'));
END;
$$;
COMMENT ON FUNCTION bench.validate_and_refresh_floor(text, text) IS
'Benchmark only: the LIMIT probe in a minimal SECURITY DEFINER PL/pgSQL function with '
'the nine result columns of validate_and_refresh_api_token.';

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
    RETURN QUERY
    SELECT TRUE, b.user_hk, b.tenant_hk, b.scope, b.expires_at, NULL::text
    FROM auth.api_token_bridge AS b
    WHERE b.token_hash = pg_catalog.sha256(pg_catalog.convert_to(p_token, 'UTF8'));
END;
$$;
COMMENT ON FUNCTION bench.validate_floor(text, text) IS
'Benchmark only: the LIMIT probe in a minimal SECURITY DEFINER PL/pgSQL function with '
'the six result columns of validate_production_api_token.';
