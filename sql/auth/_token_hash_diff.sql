-- The Data Vault hash_diff of a token satellite row: changes when any attribute does.
-- 16 bytes, like the token's keys (auth._hash_key).
-- STABLE, not IMMUTABLE: concat_ws and array_to_string are STABLE, and a function marked
-- stricter than its body is never inlined.
CREATE OR REPLACE FUNCTION auth._token_hash_diff(
    p_token_hash bytea,
    p_token_type text,
    p_scope text[],
    p_expires_at timestamptz,
    p_is_revoked boolean,
    p_revoked_reason text
) RETURNS bytea
LANGUAGE sql
STABLE
PARALLEL SAFE
AS $$
    SELECT auth._hash_key(pg_catalog.convert_to(pg_catalog.concat_ws(
        '|',
        pg_catalog.encode(p_token_hash, 'hex'),
        p_token_type,
        pg_catalog.array_to_string(p_scope, ','),
        extract(EPOCH FROM p_expires_at)::text,
        p_is_revoked::text,
        coalesce(p_revoked_reason, '')
    ), 'UTF8'))
$$;
REVOKE ALL ON FUNCTION auth._token_hash_diff(bytea, text, text[], timestamptz, boolean, text)
FROM public;
