-- Schedule the batch job with pg_cron (and a daily pruning of its run history). Calling
-- it again with the same job name updates the schedule; it never duplicates the job.
-- pg_cron lives in one database (cron.database_name); from there, jobs for a package in
-- another database go through cron.schedule_in_database (pyvault-tokens schedule does it).
CREATE OR REPLACE FUNCTION auth.schedule_token_refresh(
    p_schedule text DEFAULT '0 */6 * * *',
    p_job_name text DEFAULT 'token-refresh-check'
) RETURNS bigint
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
-- @plpgsql_check_options: performance_warnings = false
-- (it writes through dynamic SQL into pg_cron, which the checker cannot see)
DECLARE
    v_cron_db text := pg_catalog.current_setting('cron.database_name', TRUE);
    v_job bigint;
    v_id bigint;
    v_row record;
    v_cron name := auth._cron_schema();
BEGIN
    IF v_cron IS NULL THEN
        IF v_cron_db IS NULL THEN
            RAISE EXCEPTION 'pg_cron is not installed'
                USING ERRCODE = 'feature_not_supported',
                      HINT = 'Add pg_cron to shared_preload_libraries and CREATE EXTENSION pg_cron, '
                          || 'or run the batch from another scheduler: '
                          || 'CALL auth.refresh_expiring_tokens_job();';
        END IF;
        RAISE EXCEPTION 'pg_cron lives in database %, not in %', v_cron_db, pg_catalog.current_database()
            USING ERRCODE = 'feature_not_supported',
                  HINT = pg_catalog.format(
                      'Run `pyvault-tokens schedule` (it uses cron.schedule_in_database from %s), or in %s: '
                      || 'SELECT cron.schedule_in_database(%L, %L, %L, %L);',
                      v_cron_db, v_cron_db, p_job_name, p_schedule,
                      'CALL auth.refresh_expiring_tokens_job()', pg_catalog.current_database());
    END IF;
    FOR v_row IN SELECT j.* FROM auth.token_refresh_cron_jobs(p_schedule, p_job_name) AS j LOOP
        -- Dynamic SQL: pg_cron's schema exists only where it is installed.
        EXECUTE pg_catalog.format('SELECT %I.schedule_in_database($1, $2, $3, $4)', v_cron)
        INTO v_id
        USING v_row.job_name, v_row.schedule, v_row.command, v_row.database_name;
        v_job := coalesce(v_job, v_id);
    END LOOP;
    RETURN v_job;
END;
$$;
COMMENT ON FUNCTION auth.schedule_token_refresh(text, text) IS
'Schedule CALL auth.refresh_expiring_tokens_job() with pg_cron (default every 6 hours) and '
'a daily pruning of its cron.job_run_details rows older than 14 days. Idempotent per job '
'name; returns the job id. Raises feature_not_supported with a hint where pg_cron is absent.';
REVOKE ALL ON FUNCTION auth.schedule_token_refresh(text, text) FROM public;
GRANT EXECUTE ON FUNCTION auth.schedule_token_refresh(text, text) TO pyvault_admin;
