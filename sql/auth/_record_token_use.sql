-- Record a use of a valid token, at most once per usage_debounce: the bridge row's
-- record_use_after decides, and SKIP LOCKED lets exactly one of several concurrent
-- callers write while none waits. The first use of a successor starts its predecessor's
-- grace, and a successor's usage starts from its predecessor's history.
-- Predictive refresh: with at least predictive_min_gaps gaps between recorded uses, the
-- next use is expected within mean_gap x predictive_margin of this one; if that is
-- after expiry, the refresh point moves to now (PREDICTED_IDLE). Returns the token's
-- refresh point after this use, or NULL when nothing was recorded.
-- Callers inside REPEATABLE READ get an answer, not a serialization error: there the
-- writes run in a subtransaction (p_guarded) and a row changed since the snapshot means
-- nothing is recorded now. SERIALIZABLE callers record nothing: a write could fail their
-- commit. READ COMMITTED, the middlewares' level, pays for neither.
CREATE OR REPLACE FUNCTION auth._record_token_use(
    p_token_hash bytea,
    p_api_token_hk bytea,
    p_tenant_hk bytea,
    p_token_type text,
    p_predecessor_hk bytea,
    p_guarded boolean DEFAULT FALSE
) RETURNS timestamptz
LANGUAGE plpgsql
AS $$
DECLARE
    v_now timestamptz := pg_catalog.now();
    v_policy auth.token_refresh_policy;
    v_usage auth.api_token_usage;
    v_token auth.api_token_bridge;
    v_refresh_after timestamptz;
    v_isolation text := pg_catalog.current_setting('transaction_isolation');
BEGIN
    IF v_isolation = 'serializable' THEN
        RETURN NULL;
    ELSIF v_isolation = 'repeatable read' AND NOT p_guarded THEN
        BEGIN
            RETURN auth._record_token_use(p_token_hash, p_api_token_hk, p_tenant_hk,
                                          p_token_type, p_predecessor_hk, p_guarded => TRUE);
        EXCEPTION WHEN serialization_failure THEN
            RETURN NULL;  -- changed since this snapshot: a later use records it
        END;
    END IF;
    SELECT p.* INTO STRICT v_policy
    FROM auth.token_refresh_policy AS p
    WHERE p.token_type = p_token_type;

    -- Usage is best effort: never wait for a row that a refresh or another caller holds.
    -- The row is claimed here and its refresh point written below, once the usage is known.
    UPDATE auth.api_token_bridge AS b
    SET last_used_at = v_now, record_use_after = v_now + v_policy.usage_debounce
    WHERE b.ctid = (
        SELECT l.ctid FROM auth.api_token_bridge AS l
        WHERE l.token_hash = p_token_hash AND l.record_use_after <= v_now
        FOR UPDATE SKIP LOCKED
    )
    RETURNING b.* INTO v_token;
    IF NOT FOUND THEN
        RETURN NULL;  -- recorded already in this window, or busy: a later use records it
    END IF;

    INSERT INTO auth.api_token_usage AS u (
        api_token_hk, tenant_hk, first_used_at, last_used_at, use_count, gap_count,
        mean_gap_seconds, max_gap_seconds
    )
    SELECT p_api_token_hk, p_tenant_hk, v_now, v_now, 1,
           coalesce(pu.gap_count, 0), pu.mean_gap_seconds, pu.max_gap_seconds
    FROM (SELECT 1) AS one
    LEFT JOIN auth.api_token_usage AS pu ON pu.api_token_hk = p_predecessor_hk
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
        )
    RETURNING u.* INTO v_usage;

    v_refresh_after := v_token.refresh_after;
    IF v_policy.predictive_refresh
       AND v_usage.gap_count >= v_policy.predictive_min_gaps
       AND v_token.refresh_after <> 'infinity'
       AND v_token.successor_hk IS NULL
       AND v_now + pg_catalog.make_interval(
               secs => v_usage.mean_gap_seconds * v_policy.predictive_margin::double precision)
           >= v_token.expires_at THEN
        v_refresh_after := least(v_refresh_after, v_now);
    END IF;

    IF v_refresh_after <> v_token.refresh_after THEN
        UPDATE auth.api_token_bridge AS b
        SET refresh_after = v_refresh_after
        WHERE b.token_hash = p_token_hash;
    END IF;

    IF p_predecessor_hk IS NOT NULL THEN
        -- The successor is in use: its predecessor lives on for the grace window only.
        UPDATE auth.api_token_bridge AS b
        SET valid_until = least(b.valid_until, v_now + v_policy.grace_period)
        WHERE b.api_token_hk = p_predecessor_hk
          AND b.valid_until > v_now + v_policy.grace_period;
    END IF;
    RETURN v_refresh_after;
END;
$$;
REVOKE ALL ON FUNCTION auth._record_token_use(bytea, bytea, bytea, text, bytea, boolean) FROM public;
