-- The open alerts about token refresh, one row each, with a severity and a message.
-- An alert clears by itself when its cause is gone.
CREATE OR REPLACE FUNCTION auth.get_refresh_alerts()
RETURNS TABLE (alert text, severity text, message text, observed numeric, since timestamptz)
LANGUAGE plpgsql
STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_now timestamptz := pg_catalog.now();
    v_config auth.monitoring_config;
    v_attempts bigint;
    v_failed bigint;
    v_count bigint;
    v_first timestamptz;
    v_last_batch timestamptz;
BEGIN
    SELECT c.* INTO STRICT v_config FROM auth.monitoring_config AS c;

    -- Refresh failures over the last hour. Attempts are refreshes that could succeed:
    -- a NOT_NEEDED, ENQUEUED or REJECTED (invalid token) answer is not an attempt.
    SELECT pg_catalog.count(*) FILTER (WHERE e.outcome IN ('ROTATED', 'EXTENDED', 'ALREADY_REFRESHED', 'FAILED')),
           pg_catalog.count(*) FILTER (WHERE e.outcome = 'FAILED'),
           pg_catalog.min(e.occurred_at) FILTER (WHERE e.outcome = 'FAILED')
    INTO v_attempts, v_failed, v_first
    FROM auth.token_refresh_event AS e
    WHERE e.occurred_at > v_now - interval '1 hour';
    IF v_attempts >= v_config.failure_min_attempts
       AND v_failed::numeric / v_attempts > v_config.failure_rate_threshold THEN
        alert := 'REFRESH_FAILURE_RATE';
        severity := 'critical';
        observed := pg_catalog.round(v_failed::numeric / v_attempts, 4);
        message := pg_catalog.format('%s of %s refreshes failed in the last hour (threshold %s%%)',
                                     v_failed, v_attempts, v_config.failure_rate_threshold * 100);
        since := v_first;
        RETURN NEXT;
    END IF;

    SELECT pg_catalog.count(*), pg_catalog.min(s.occurred_at) INTO v_count, v_first
    FROM auth.security_event AS s
    WHERE s.event_type = 'TOKEN_REUSE' AND s.occurred_at > v_now - interval '24 hours';
    IF v_count > 0 THEN
        alert := 'REUSE_DETECTED';
        severity := 'critical';
        observed := v_count::numeric;
        message := pg_catalog.format(
            '%s rotated token(s) presented after their grace window in the last 24 hours', v_count);
        since := v_first;
        RETURN NEXT;
    END IF;

    SELECT pg_catalog.count(*), pg_catalog.min(t.expires_at) INTO v_count, v_first
    FROM auth.token_refresh_path AS t
    WHERE NOT t.has_refresh_path AND t.expires_at < v_now + interval '24 hours';
    IF v_count > 0 THEN
        alert := 'EXPIRING_WITHOUT_REFRESH_PATH';
        severity := 'warning';
        observed := v_count::numeric;
        message := pg_catalog.format(
            '%s token(s) expire within 24 hours and nothing will refresh them', v_count);
        since := v_first;
        RETURN NEXT;
    END IF;

    SELECT pg_catalog.max(r.started_at) INTO v_last_batch
    FROM auth.token_refresh_batch_run AS r
    WHERE NOT r.skipped AND NOT r.dry_run;
    IF (v_last_batch IS NULL OR v_last_batch < v_now - 2 * v_config.batch_interval)
       AND EXISTS (SELECT FROM auth.token_refresh_path) THEN
        alert := 'BATCH_JOB_STALE';
        severity := 'warning';
        observed := extract(EPOCH FROM v_now - v_last_batch);
        message := CASE WHEN v_last_batch IS NULL THEN 'the batch refresh has never run'
            ELSE pg_catalog.format('the batch refresh last ran %s ago (expected every %s)',
                                   pg_catalog.date_trunc('second', v_now - v_last_batch),
                                   v_config.batch_interval) END;
        since := v_last_batch;
        RETURN NEXT;
    END IF;

    SELECT pg_catalog.sum(j.failed_last_day)::bigint, pg_catalog.min(j.first_failure_last_day)
    INTO v_count, v_first
    FROM auth._token_refresh_jobs() AS j;
    IF v_count > 0 THEN
        alert := 'CRON_JOB_FAILED';
        severity := 'warning';
        observed := v_count::numeric;
        message := pg_catalog.format('%s pg_cron run(s) of the refresh jobs failed in 24 hours',
                                     v_count);
        since := v_first;
        RETURN NEXT;
    END IF;

    SELECT pg_catalog.max(h.last_seen_at) INTO v_first FROM auth.refresher_heartbeat AS h;
    IF v_first < v_now - v_config.refresher_stale_after THEN
        alert := 'REFRESHER_NOT_SEEN';
        severity := 'warning';
        observed := extract(EPOCH FROM v_now - v_first);
        message := pg_catalog.format('no refresher service has swept since %s', v_first);
        since := v_first;
        RETURN NEXT;
    END IF;
END;
$$;
COMMENT ON FUNCTION auth.get_refresh_alerts() IS
'Open alerts (alert, severity, message, observed value, since); read it through the '
'view auth.refresh_alerts.';
REVOKE ALL ON FUNCTION auth.get_refresh_alerts() FROM public;
GRANT EXECUTE ON FUNCTION auth.get_refresh_alerts() TO pyvault_monitor, pyvault_admin;
