-- The peer for the benchmark: the seed design's validation shape, in a bench schema that
-- only benchmark databases get. Same arguments and result columns as
-- auth.validate_production_api_token, the same format check, but it reads its own token
-- table (one row per token, keyed by token_hash, as the seed's was) and on EVERY valid
-- call it UPDATEs that row's last-used columns and INSERTs an activity row (no debounce).
-- The loader fills bench.peer_token with the read-range tokens. Its one index probe and
-- no join make the peer's read as cheap as ours, so the ratio measures the writes.
CREATE SCHEMA IF NOT EXISTS bench;

CREATE TABLE IF NOT EXISTS bench.peer_token (
    token_hash bytea PRIMARY KEY,
    api_token_hk bytea NOT NULL,
    user_hk bytea NOT NULL,
    tenant_hk bytea NOT NULL,
    scope text[] NOT NULL,
    expires_at timestamptz NOT NULL,
    is_revoked boolean NOT NULL DEFAULT FALSE,
    last_used_at timestamptz,
    use_count bigint NOT NULL DEFAULT 0
);

CREATE TABLE IF NOT EXISTS bench.activity (
    activity_id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    api_token_hk bytea NOT NULL,
    tenant_hk bytea NOT NULL,
    activity_type text NOT NULL,
    occurred_at timestamptz NOT NULL DEFAULT pg_catalog.clock_timestamp(),
    detail jsonb NOT NULL DEFAULT '{}'
);

-- Validate a token the seed's way: one read, then an UPDATE and an INSERT per call.
CREATE OR REPLACE FUNCTION bench.validate_seed_shape(
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
DECLARE
    v_token record;
BEGIN
    is_valid := FALSE;
    IF p_token IS NULL OR pg_catalog.octet_length(p_token) <> 73
       OR pg_catalog.left(p_token, 9) <> 'ovt_prod_' THEN
        message := 'Token format is invalid';
        RETURN NEXT;
        RETURN;
    END IF;
    SELECT t.token_hash, t.api_token_hk, t.user_hk, t.tenant_hk, t.scope, t.expires_at,
           t.is_revoked
    INTO v_token
    FROM bench.peer_token AS t
    WHERE t.token_hash = pg_catalog.sha256(pg_catalog.convert_to(p_token, 'UTF8'));
    IF NOT FOUND THEN
        message := 'Token not found';
    ELSIF v_token.is_revoked THEN
        message := 'Token has been revoked';
    ELSIF pg_catalog.now() >= v_token.expires_at THEN
        message := 'Token has expired';
    ELSIF NOT p_required_scope = ANY(v_token.scope) THEN
        message := 'Token lacks the required scope';
    ELSE
        UPDATE bench.peer_token AS t
        SET last_used_at = pg_catalog.now(), use_count = t.use_count + 1
        WHERE t.token_hash = v_token.token_hash;
        INSERT INTO bench.activity (api_token_hk, tenant_hk, activity_type, detail)
        VALUES (
            v_token.api_token_hk, v_token.tenant_hk, 'TOKEN_VALIDATED',
            pg_catalog.jsonb_build_object('required_scope', p_required_scope)
        );
        is_valid := TRUE;
        user_hk := v_token.user_hk;
        tenant_hk := v_token.tenant_hk;
        scope := v_token.scope;
        expires_at := v_token.expires_at;
        message := 'Token is valid';
    END IF;
    RETURN NEXT;
END;
$$;
COMMENT ON FUNCTION bench.validate_seed_shape(text, text) IS
'Benchmark peer only: the seed design (a write on every validation). Never use it.';
