-- Change the refresh policy of a token type; arguments left NULL keep their value.
-- Live tokens of that type get their refresh point recomputed in the same transaction.
CREATE OR REPLACE FUNCTION auth.set_refresh_policy(
    p_token_type text,
    p_strategy text DEFAULT NULL,
    p_refresh_threshold interval DEFAULT NULL,
    p_time_to_live interval DEFAULT NULL,
    p_max_lifetime interval DEFAULT NULL,
    p_grace_period interval DEFAULT NULL,
    p_reuse_action text DEFAULT NULL,
    p_usage_debounce interval DEFAULT NULL,
    p_predictive_refresh boolean DEFAULT NULL,
    p_force_min_interval interval DEFAULT NULL,
    p_refresh_lock_wait interval DEFAULT NULL
) RETURNS jsonb
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_policy auth.token_refresh_policy;
BEGIN
    UPDATE auth.token_refresh_policy AS p
    SET strategy = coalesce(p_strategy, p.strategy),
        refresh_threshold = coalesce(p_refresh_threshold, p.refresh_threshold),
        time_to_live = coalesce(p_time_to_live, p.time_to_live),
        max_lifetime = coalesce(p_max_lifetime, p.max_lifetime),
        grace_period = coalesce(p_grace_period, p.grace_period),
        reuse_action = coalesce(p_reuse_action, p.reuse_action),
        usage_debounce = coalesce(p_usage_debounce, p.usage_debounce),
        predictive_refresh = coalesce(p_predictive_refresh, p.predictive_refresh),
        force_min_interval = coalesce(p_force_min_interval, p.force_min_interval),
        refresh_lock_wait = coalesce(p_refresh_lock_wait, p.refresh_lock_wait),
        updated_at = pg_catalog.now()
    WHERE p.token_type = p_token_type
    RETURNING p.* INTO v_policy;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'unknown token type %', coalesce(p_token_type, 'NULL')
            USING ERRCODE = 'invalid_parameter_value', HINT = 'Use API, PRODUCTION or API_KEY.';
    END IF;
    IF v_policy.strategy = 'EXTEND' THEN
        -- Tokens the batch handed to the outbox while the type rotated would stay out of
        -- the due index for ever: settle their outbox rows and put them back, so the next
        -- batch run extends them.
        UPDATE auth.token_refresh_outbox AS o
        SET processed_at = pg_catalog.clock_timestamp(), outcome = 'POLICY_CHANGED'
        FROM auth.api_token_bridge AS b
        WHERE o.processed_at IS NULL AND o.api_token_hk = b.api_token_hk
          AND b.token_type = p_token_type;
        UPDATE auth.api_token_bridge AS b
        SET refresh_enqueued_at = NULL
        WHERE b.token_type = p_token_type AND b.refresh_enqueued_at IS NOT NULL;
    END IF;
    UPDATE auth.api_token_bridge AS b
    SET refresh_after = auth._refresh_after(b.token_type, b.expires_at, b.family_started_at)
    WHERE b.token_type = p_token_type
      AND NOT b.is_revoked
      AND b.successor_hk IS NULL
      AND b.expires_at > pg_catalog.now();
    RETURN pg_catalog.to_jsonb(v_policy);
END;
$$;
COMMENT ON FUNCTION auth.set_refresh_policy(
    text, text, interval, interval, interval, interval, text, interval, boolean, interval, interval
) IS 'Change the refresh policy of a token type (NULL arguments keep their value); returns it.';
REVOKE ALL ON FUNCTION auth.set_refresh_policy(
    text, text, interval, interval, interval, interval, text, interval, boolean, interval, interval
) FROM public;
GRANT EXECUTE ON FUNCTION auth.set_refresh_policy(
    text, text, interval, interval, interval, interval, text, interval, boolean, interval, interval
) TO pyvault_admin;
