-- Record a use of a valid token, at most once per usage_debounce: the bridge row's
-- record_use_after decides, and SKIP LOCKED lets exactly one of several concurrent
-- callers write while none waits. The first use of a successor starts its predecessor's grace.
CREATE OR REPLACE FUNCTION auth._record_token_use(
    p_token_hash bytea,
    p_api_token_hk bytea,
    p_tenant_hk bytea,
    p_token_type text,
    p_predecessor_hk bytea
) RETURNS boolean
LANGUAGE plpgsql
AS $$
DECLARE
    v_now timestamptz := pg_catalog.now();
    v_policy auth.token_refresh_policy;
BEGIN
    SELECT p.* INTO STRICT v_policy
    FROM auth.token_refresh_policy AS p
    WHERE p.token_type = p_token_type;

    -- Usage is best effort: never wait for a row that a refresh or another caller holds.
    PERFORM
    FROM auth.api_token_bridge AS b
    WHERE b.token_hash = p_token_hash AND b.record_use_after <= v_now
    FOR UPDATE SKIP LOCKED;
    IF NOT FOUND THEN
        RETURN FALSE;  -- recorded already in this window, or busy: a later use records it
    END IF;
    UPDATE auth.api_token_bridge AS b
    SET last_used_at = v_now, record_use_after = v_now + v_policy.usage_debounce
    WHERE b.token_hash = p_token_hash;

    INSERT INTO auth.api_token_usage AS u (
        api_token_hk, tenant_hk, first_used_at, last_used_at
    ) VALUES (p_api_token_hk, p_tenant_hk, v_now, v_now)
    ON CONFLICT ON CONSTRAINT api_token_usage_pkey DO UPDATE
    SET last_used_at = excluded.last_used_at,
        use_count = u.use_count + 1,
        gap_count = u.gap_count + 1,
        mean_gap_seconds = coalesce(u.mean_gap_seconds, 0)
        + (extract(EPOCH FROM excluded.last_used_at - u.last_used_at)::double precision
           - coalesce(u.mean_gap_seconds, 0)) / (u.gap_count + 1),
        max_gap_seconds = greatest(
            u.max_gap_seconds,
            extract(EPOCH FROM excluded.last_used_at - u.last_used_at)::double precision
        );

    IF p_predecessor_hk IS NOT NULL THEN
        -- The successor is in use: its predecessor lives on for the grace window only.
        UPDATE auth.api_token_bridge AS b
        SET valid_until = least(b.valid_until, v_now + v_policy.grace_period)
        WHERE b.api_token_hk = p_predecessor_hk
          AND b.valid_until > v_now + v_policy.grace_period;
    END IF;
    RETURN TRUE;
END;
$$;
REVOKE ALL ON FUNCTION auth._record_token_use(bytea, bytea, bytea, text, bytea) FROM public;
