-- Remove the jobs auth.schedule_token_refresh made (auth.token_refresh_cron_jobs) from pg_cron.
CREATE OR REPLACE FUNCTION auth.unschedule_token_refresh(
    p_job_name text DEFAULT 'token-refresh-check'
) RETURNS boolean
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
-- @plpgsql_check_options: performance_warnings = false
-- (it writes through dynamic SQL into pg_cron, which the checker cannot see)
DECLARE
    v_removed boolean := FALSE;
    v_name text;
    v_exists boolean;
    v_cron name := auth._cron_schema();
BEGIN
    IF v_cron IS NULL THEN
        RAISE EXCEPTION 'pg_cron is not installed in this database'
            USING ERRCODE = 'feature_not_supported',
                  HINT = 'Jobs live where pg_cron is; use pyvault-tokens unschedule.';
    END IF;
    FOR v_name IN SELECT j.job_name FROM auth.token_refresh_cron_jobs(p_job_name => p_job_name) AS j LOOP
        EXECUTE pg_catalog.format('SELECT EXISTS (SELECT FROM %I.job WHERE jobname = $1)', v_cron)
        INTO v_exists USING v_name;
        IF v_exists THEN
            EXECUTE pg_catalog.format('SELECT %I.unschedule($1)', v_cron) USING v_name;
            v_removed := v_removed OR v_name = p_job_name;
        END IF;
    END LOOP;
    RETURN v_removed;
END;
$$;
COMMENT ON FUNCTION auth.unschedule_token_refresh(text) IS
'Remove the batch job (and its lifecycle and pruning jobs) from pg_cron; returns whether '
'the batch job existed.';
REVOKE ALL ON FUNCTION auth.unschedule_token_refresh(text) FROM public;
GRANT EXECUTE ON FUNCTION auth.unschedule_token_refresh(text) TO pyvault_admin;
