-- Create a token in the vault (hub, user link, satellite) and its bridge row.
-- Returns the plaintext once; only its sha256 is stored.
CREATE OR REPLACE FUNCTION auth._issue_token(
    p_user_hk bytea,
    p_tenant_hk bytea,
    p_scope text[],
    p_token_type text,
    p_expires_at timestamptz,
    p_record_source text,
    p_family_hk bytea DEFAULT NULL,
    p_family_started_at timestamptz DEFAULT NULL,
    p_generation integer DEFAULT 0,
    p_predecessor_hk bytea DEFAULT NULL,
    OUT o_token text,
    OUT o_api_token_hk bytea
)
LANGUAGE plpgsql
AS $$
DECLARE
    v_now timestamptz := pg_catalog.now();
    v_bk text := 'tok_' || pg_catalog.encode(extensions.gen_random_bytes(16), 'hex');
    v_hash bytea;
    v_family_started_at timestamptz := coalesce(p_family_started_at, v_now);
BEGIN
    o_token := auth._new_token_secret();
    o_api_token_hk := auth._hash_key(pg_catalog.convert_to(v_bk, 'UTF8'));
    v_hash := pg_catalog.sha256(pg_catalog.convert_to(o_token, 'UTF8'));

    -- One statement, not four: each statement from PL/pgSQL pays its own executor start,
    -- plan revalidation and locks. The foreign keys are checked at its end, when all four
    -- rows exist.
    WITH hub AS (
        INSERT INTO auth.api_token_h (api_token_hk, api_token_bk, tenant_hk, record_source)
        VALUES (o_api_token_hk, v_bk, p_tenant_hk, p_record_source)
    ),
    link AS (
        INSERT INTO auth.user_token_l (
            link_user_token_hk, user_hk, api_token_hk, tenant_hk, record_source
        ) VALUES (
            auth._hash_key(p_user_hk || o_api_token_hk), p_user_hk, o_api_token_hk,
            p_tenant_hk, p_record_source
        )
    ),
    satellite AS (
        INSERT INTO auth.api_token_s (
            api_token_hk, hash_diff, token_hash, token_type, scope, expires_at, record_source
        ) VALUES (
            o_api_token_hk,
            auth._token_hash_diff(v_hash, p_token_type, p_scope, p_expires_at, FALSE, NULL),
            v_hash, p_token_type, p_scope, p_expires_at, p_record_source
        )
    )
    INSERT INTO auth.api_token_bridge (
        token_hash, api_token_hk, user_hk, tenant_hk, token_type, scope, issued_at,
        expires_at, valid_until, refresh_after, family_hk, family_started_at,
        generation, predecessor_hk
    ) VALUES (
        v_hash, o_api_token_hk, p_user_hk, p_tenant_hk, p_token_type, p_scope, v_now,
        p_expires_at, p_expires_at,
        auth._refresh_after(p_token_type, p_expires_at, v_family_started_at),
        coalesce(p_family_hk, o_api_token_hk), v_family_started_at,
        p_generation, p_predecessor_hk
    );
END;
$$;
REVOKE ALL ON FUNCTION auth._issue_token(
    bytea, bytea, text[], text, timestamptz, text, bytea, timestamptz, integer, bytea
) FROM public;
