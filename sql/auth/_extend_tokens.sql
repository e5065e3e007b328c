-- EXTEND a set of tokens (rows the caller has locked): move expires_at to the policy
-- time to live from now, capped by the family's maximum lifetime, and record the change
-- in the satellite and the event log. A token already at its cap is not extended: its
-- refresh point becomes 'infinity' and a REJECTED event says MAX_LIFETIME_REACHED. One
-- whose expiry would not move (asked again too soon) keeps its refresh point: NOT_NEEDED.
-- Set-based (arrays, no temp table), so the batch job extends a batch in a few statements.
CREATE OR REPLACE FUNCTION auth._extend_tokens(
    p_hashes bytea[],
    p_trigger text,
    p_record_source text
) RETURNS TABLE (
    o_token_hash bytea, o_new_expires_at timestamptz, o_extended boolean, o_capped boolean
)
LANGUAGE plpgsql
AS $$
DECLARE
    v_now timestamptz := pg_catalog.now();
    v_load timestamptz := pg_catalog.clock_timestamp();
    v_hash bytea[];
    v_hk bytea[];
    v_tenant bytea[];
    v_old timestamptz[];
    v_new timestamptz[];
    v_extended boolean[];
    v_after timestamptz[];
BEGIN
    SELECT pg_catalog.array_agg(b.token_hash), pg_catalog.array_agg(b.api_token_hk),
           pg_catalog.array_agg(b.tenant_hk), pg_catalog.array_agg(b.expires_at),
           pg_catalog.array_agg(x.new_expires_at),
           pg_catalog.array_agg(x.new_expires_at > b.expires_at),
           -- as auth._refresh_after: never again once the new expiry reaches the cap
           pg_catalog.array_agg(auth._refresh_point(x.new_expires_at, b.family_started_at,
                                                    p.max_lifetime, p.refresh_threshold))
    INTO v_hash, v_hk, v_tenant, v_old, v_new, v_extended, v_after
    FROM auth.api_token_bridge AS b
    INNER JOIN auth.token_refresh_policy AS p ON b.token_type = p.token_type
    CROSS JOIN LATERAL (
        SELECT auth._capped_expiry(v_now, p.time_to_live, b.family_started_at, p.max_lifetime,
                                   b.expires_at) AS new_expires_at
    ) AS x
    WHERE b.token_hash = ANY(p_hashes);
    IF v_hash IS NULL THEN
        RETURN;
    END IF;

    UPDATE auth.api_token_bridge AS b
    SET expires_at = e.new_expires_at,
        valid_until = CASE WHEN e.extended THEN e.new_expires_at ELSE b.valid_until END,
        refresh_after = e.refresh_after  -- 'infinity' exactly when the cap is reached
    FROM ROWS FROM (
        pg_catalog.unnest(v_hash), pg_catalog.unnest(v_new),
        pg_catalog.unnest(v_extended), pg_catalog.unnest(v_after)
    ) AS e (token_hash, new_expires_at, extended, refresh_after)
    WHERE b.token_hash = e.token_hash;

    WITH e AS (
        SELECT u.api_token_hk, u.new_expires_at
        FROM ROWS FROM (
            pg_catalog.unnest(v_hk), pg_catalog.unnest(v_new), pg_catalog.unnest(v_extended)
        ) AS u (api_token_hk, new_expires_at, extended)
        WHERE u.extended
    ),
    ended AS (
        UPDATE auth.api_token_s AS s
        SET load_end_date = v_load
        FROM e
        WHERE s.api_token_hk = e.api_token_hk AND s.load_end_date IS NULL
        RETURNING s.*, e.new_expires_at AS new_expires_at
    )
    INSERT INTO auth.api_token_s (
        api_token_hk, load_date, hash_diff, token_hash, token_type, scope,
        expires_at, is_revoked, revoked_reason, record_source
    )
    SELECT ended.api_token_hk, v_load,
           auth._token_hash_diff(ended.token_hash, ended.token_type, ended.scope,
                                 ended.new_expires_at, ended.is_revoked, ended.revoked_reason),
           ended.token_hash, ended.token_type, ended.scope, ended.new_expires_at,
           ended.is_revoked, ended.revoked_reason, p_record_source
    FROM ended;

    INSERT INTO auth.token_refresh_event (
        api_token_hk, tenant_hk, refresh_trigger, outcome, reason, old_expires_at, new_expires_at
    )
    SELECT e.api_token_hk, e.tenant_hk, p_trigger,
           CASE WHEN e.extended THEN 'EXTENDED'
                WHEN e.refresh_after = 'infinity' THEN 'REJECTED' ELSE 'NOT_NEEDED' END,
           CASE WHEN e.extended THEN 'EXPIRY_EXTENDED'
                WHEN e.refresh_after = 'infinity' THEN 'MAX_LIFETIME_REACHED'
                ELSE 'NO_REFRESH_NEEDED' END,
           e.old_expires_at, CASE WHEN e.extended THEN e.new_expires_at END
    FROM ROWS FROM (
        pg_catalog.unnest(v_hk), pg_catalog.unnest(v_tenant), pg_catalog.unnest(v_old),
        pg_catalog.unnest(v_new), pg_catalog.unnest(v_extended), pg_catalog.unnest(v_after)
    ) AS e (api_token_hk, tenant_hk, old_expires_at, new_expires_at, extended, refresh_after);

    RETURN QUERY
    SELECT e.token_hash, e.new_expires_at, e.extended, e.refresh_after = 'infinity'
    FROM ROWS FROM (
        pg_catalog.unnest(v_hash), pg_catalog.unnest(v_new), pg_catalog.unnest(v_extended),
        pg_catalog.unnest(v_after)
    ) AS e (token_hash, new_expires_at, extended, refresh_after);
END;
$$;
REVOKE ALL ON FUNCTION auth._extend_tokens(bytea[], text, text) FROM public;
