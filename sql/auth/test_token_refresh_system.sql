-- Diagnose the whole refresh system for one token, step by step. Non-destructive by
-- default: the refresh step runs in a subtransaction that is rolled back. With p_apply
-- it really refreshes (the holder then receives the successor as ALREADY_REFRESHED).
-- Output never holds a whole token or token hash: a short prefix at most, and nothing at
-- all of an input that is not a well-formed token.
CREATE OR REPLACE FUNCTION auth.test_token_refresh_system(
    p_token text,
    p_apply boolean DEFAULT FALSE
) RETURNS TABLE (step text, result text, details jsonb)
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_prefix text;
    v_hash bytea;
    v_token auth.api_token_bridge;
    v_sat auth.api_token_s;
    v_status record;
    v_policy auth.token_refresh_policy;
    v_refresh record;
    v_family jsonb;
    v_job jsonb;
    v_bad jsonb;
    v_format_ok boolean;
BEGIN
    -- 1. Format
    v_format_ok := p_token IS NOT NULL AND p_token ~ '^ovt_prod_[0-9a-f]{64}$';
    -- As pyvault_tokens.display.token_prefix: 'ovt_prod_' and 4 hex, or a fixed text.
    v_prefix := CASE WHEN v_format_ok THEN pg_catalog.left(p_token, 13) || '…'
                     ELSE '(not a token)…' END;
    step := 'FORMAT';
    result := CASE WHEN v_format_ok THEN 'OK' ELSE 'FAIL: not ovt_prod_ followed by 64 lower-case hex' END;
    details := pg_catalog.jsonb_build_object(
        'token_prefix', v_prefix,
        'length', pg_catalog.length(p_token),
        'prefix_ok', coalesce(pg_catalog.left(p_token, 9) = 'ovt_prod_', FALSE),
        'lowercase_hex_ok', coalesce(pg_catalog.substr(p_token, 10) ~ '^[0-9a-f]{64}$', FALSE)
    );
    RETURN NEXT;
    IF NOT v_format_ok THEN
        RETURN;
    END IF;

    -- 2. Lookup: the bridge row and the vault's current satellite row agree.
    v_hash := pg_catalog.sha256(pg_catalog.convert_to(p_token, 'UTF8'));
    SELECT b.* INTO v_token FROM auth.api_token_bridge AS b WHERE b.token_hash = v_hash;
    SELECT s.* INTO v_sat FROM auth.api_token_s AS s
    WHERE s.api_token_hk = v_token.api_token_hk AND s.load_end_date IS NULL;
    step := 'LOOKUP';
    IF v_token.token_hash IS NULL THEN
        result := 'FAIL: no token with this hash';
        details := pg_catalog.jsonb_build_object('token_prefix', v_prefix);
        RETURN NEXT;
        RETURN;
    END IF;
    result := CASE
        WHEN v_sat.api_token_hk IS NULL THEN 'FAIL: bridge row without a current satellite row'
        WHEN v_sat.token_hash <> v_hash OR v_sat.expires_at <> v_token.expires_at
             OR v_sat.is_revoked <> v_token.is_revoked
            THEN 'FAIL: bridge and satellite disagree'
        ELSE 'OK'
    END;
    details := pg_catalog.jsonb_build_object(
        'token_id', (SELECT h.api_token_bk FROM auth.api_token_h AS h
                     WHERE h.api_token_hk = v_token.api_token_hk),
        'token_type', v_token.token_type,
        'issued_at', v_token.issued_at,
        'satellite_expires_at', v_sat.expires_at,
        'bridge_expires_at', v_token.expires_at
    );
    RETURN NEXT;

    -- 3. Validation and 4. refresh status, both read-only.
    SELECT s.* INTO v_status FROM auth.get_token_refresh_status(p_token) AS s;
    step := 'VALIDATION';
    result := CASE WHEN v_status.is_valid THEN 'OK' ELSE 'FAIL: ' || v_status.message END;
    details := pg_catalog.jsonb_build_object(
        'is_valid', v_status.is_valid, 'message', v_status.message,
        'scope', v_token.scope, 'is_revoked', v_token.is_revoked,
        'valid_until', v_token.valid_until
    );
    RETURN NEXT;

    step := 'REFRESH_STATUS';
    result := CASE
        WHEN NOT v_status.is_valid THEN 'FAIL: token is not valid'
        WHEN v_status.refresh_reason = 'MAX_LIFETIME_REACHED'
            THEN 'WARN: family reached its maximum lifetime; no refresh possible'
        WHEN v_status.refresh_recommended THEN 'OK: refresh recommended (' || v_status.refresh_reason || ')'
        ELSE 'OK'
    END;
    details := pg_catalog.jsonb_build_object(
        'expires_at', v_status.expires_at,
        'time_until_expiry', v_status.time_until_expiry::text,
        'refresh_recommended', v_status.refresh_recommended,
        'refresh_reason', v_status.refresh_reason,
        'recommendation_reason', v_status.recommendation_reason,
        'refresh_after', v_status.refresh_after,
        'last_used_at', v_status.last_used_at
    );
    RETURN NEXT;

    -- 5. Policy
    SELECT p.* INTO STRICT v_policy FROM auth.token_refresh_policy AS p
    WHERE p.token_type = v_token.token_type;
    step := 'POLICY';
    result := 'OK';
    details := pg_catalog.to_jsonb(v_policy);
    RETURN NEXT;

    -- 6. Lineage
    SELECT pg_catalog.jsonb_build_object(
        'generation', v_token.generation,
        -- spent tokens (rotated, moved out of the bridge by the pruning) belong to it too
        'family_size', pg_catalog.count(*) + (SELECT pg_catalog.count(*) FROM auth.spent_token AS st
                                              WHERE st.family_hk = v_token.family_hk),
        'family_live', pg_catalog.count(*) FILTER (
            WHERE NOT f.is_revoked AND f.valid_until > pg_catalog.now()),
        'family_started_at', v_token.family_started_at,
        'family_max_expiry', v_token.family_started_at + v_policy.max_lifetime,
        'has_predecessor', v_token.predecessor_hk IS NOT NULL,
        'has_successor', v_token.successor_hk IS NOT NULL,
        'successor_kept', v_token.successor_secret IS NOT NULL
    ) INTO v_family
    FROM auth.api_token_bridge AS f
    WHERE f.family_hk = v_token.family_hk;
    step := 'LINEAGE';
    result := CASE
        WHEN v_token.successor_hk IS NOT NULL AND NOT EXISTS (
            SELECT FROM auth.token_rotation_l AS l
            WHERE l.predecessor_hk = v_token.api_token_hk AND l.successor_hk = v_token.successor_hk
        ) THEN 'FAIL: successor without a lineage link'
        ELSE 'OK'
    END;
    details := v_family;
    RETURN NEXT;

    -- 7. Refresh: a forced refresh, rolled back unless p_apply.
    step := CASE WHEN p_apply THEN 'REFRESH_APPLIED' ELSE 'REFRESH_DRY_RUN' END;
    IF pg_catalog.current_setting('transaction_read_only')::boolean THEN
        result := 'WARN: read-only transaction; refresh not attempted';
        details := '{}';
    ELSE
        BEGIN
            v_refresh := auth._refresh_token(p_token, NULL, TRUE, 'DIAGNOSTIC');
            IF NOT coalesce(p_apply, FALSE) THEN
                RAISE EXCEPTION USING ERRCODE = 'PVDRY', MESSAGE = 'dry run: roll back';
            END IF;
        EXCEPTION WHEN SQLSTATE 'PVDRY' THEN
            NULL;  -- the refresh ran and was rolled back; v_refresh keeps its answer
        END;
        result := CASE WHEN v_refresh.o_success THEN 'OK' ELSE 'FAIL: ' || v_refresh.o_message END;
        details := pg_catalog.jsonb_build_object(
            'would_succeed', v_refresh.o_success,
            'applied', coalesce(p_apply, FALSE),
            'refresh_reason', v_refresh.o_refresh_reason,
            'new_expires_at', v_refresh.o_expires_at,
            'new_token_prefix', CASE WHEN v_refresh.o_new_token IS NOT NULL
                THEN pg_catalog.left(v_refresh.o_new_token, 13) || '…' END,
            'strategy', v_policy.strategy,
            'message', v_refresh.o_message
        );
    END IF;
    RETURN NEXT;

    -- 8. Schedule: is the batch job scheduled with pg_cron, and how did it last run?
    step := 'SCHEDULE';
    IF auth._cron_schema() IS NULL THEN
        result := 'WARN: pg_cron is not installed in this database; idle tokens rely on the refresher';
        details := '{}';
    ELSE
        SELECT pg_catalog.jsonb_build_object('jobs', coalesce(pg_catalog.jsonb_agg(
                   pg_catalog.jsonb_build_object(
                       'jobid', j.jobid, 'jobname', j.jobname, 'kind', j.kind,
                       'schedule', j.schedule, 'active', j.active,
                       'last_status', j.last_status, 'last_start', j.last_start)), '[]'))
        INTO v_job
        FROM auth._token_refresh_jobs() AS j;
        result := CASE
            WHEN NOT v_job @? '$.jobs[*] ? (@.kind == "batch" && @.active == true)'
                THEN 'WARN: no active pg_cron job runs the batch refresh for this database'
            WHEN v_job @? '$.jobs[*] ? (@.kind == "batch" && @.last_status == "failed")'
                THEN 'WARN: the last run of a batch job failed'
            WHEN NOT v_job @? '$.jobs[*] ? (@.kind == "history" && @.active == true)'
                THEN 'WARN: no active pg_cron job prunes token history (auth.prune_token_history)'
            ELSE 'OK'
        END;
        details := v_job;
    END IF;
    RETURN NEXT;

    -- 9. Security: the invariants of DESIGN.md section 5, checked on this live database.
    v_bad := auth._security_findings();
    step := 'SECURITY';
    result := CASE
        WHEN EXISTS (SELECT FROM pg_catalog.jsonb_each(v_bad) AS f WHERE f.value <> '[]')
            THEN 'FAIL: see details'
        ELSE 'OK'
    END;
    details := v_bad;
    RETURN NEXT;
END;
$$;
COMMENT ON FUNCTION auth.test_token_refresh_system(text, boolean) IS
'Diagnose the refresh system for one token: format, lookup, validation, refresh status, '
'policy, lineage, a forced refresh (rolled back unless p_apply), pg_cron schedule and '
'security. Each step reports OK, WARN: or FAIL: with details; never a whole token.';
REVOKE ALL ON FUNCTION auth.test_token_refresh_system(text, boolean) FROM public;
GRANT EXECUTE ON FUNCTION auth.test_token_refresh_system(text, boolean) TO pyvault_admin;
