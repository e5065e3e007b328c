-- A refresher service reports a sweep: when, and which tokens it holds (they have a
-- refresh path). Tokens are hashed here; unknown ones are ignored.
CREATE OR REPLACE FUNCTION auth.record_refresher_heartbeat(
    p_instance text,
    p_tokens text[] DEFAULT '{}'
) RETURNS integer
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_held integer;
BEGIN
    IF p_instance IS NULL OR p_instance !~ '^[[:print:]]{1,200}$' THEN
        RAISE EXCEPTION 'instance must be 1 to 200 printable characters'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    DELETE FROM auth.refresher_token AS r WHERE r.instance = p_instance;
    INSERT INTO auth.refresher_token (api_token_hk, instance, seen_at)
    SELECT b.api_token_hk, p_instance, pg_catalog.now()
    FROM auth.api_token_bridge AS b
    WHERE b.token_hash IN (
        SELECT pg_catalog.sha256(pg_catalog.convert_to(t.token, 'UTF8'))
        FROM pg_catalog.unnest(coalesce(p_tokens, '{}')) AS t (token)
        WHERE pg_catalog.octet_length(t.token) = 73
    )
    ON CONFLICT (api_token_hk) DO UPDATE
    SET instance = excluded.instance, seen_at = excluded.seen_at;
    GET DIAGNOSTICS v_held = ROW_COUNT;
    INSERT INTO auth.refresher_heartbeat AS h (instance, last_seen_at, tokens_held)
    VALUES (p_instance, pg_catalog.now(), v_held)
    ON CONFLICT (instance) DO UPDATE
    SET last_seen_at = excluded.last_seen_at, tokens_held = excluded.tokens_held;
    RETURN v_held;
END;
$$;
COMMENT ON FUNCTION auth.record_refresher_heartbeat(text, text[]) IS
'Called by the refresher service after each sweep with the tokens it holds; returns how '
'many of them are known.';
-- pyvault_api held it before migration 0006; CREATE OR REPLACE keeps grants, so take it back.
REVOKE ALL ON FUNCTION auth.record_refresher_heartbeat(text, text[]) FROM public, pyvault_api;
GRANT EXECUTE ON FUNCTION auth.record_refresher_heartbeat(text, text[])
TO pyvault_refresher, pyvault_admin;
