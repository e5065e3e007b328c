-- The pg_cron jobs that run the batch refresh for this database: the job itself, the
-- daily lifecycle pruning (auth.prune_token_history) and a daily pruning of the jobs'
-- run history. Used by auth.schedule_token_refresh here, and by
-- `pyvault-tokens schedule` from the cron database when pg_cron lives elsewhere.
CREATE OR REPLACE FUNCTION auth.token_refresh_cron_jobs(
    p_schedule text DEFAULT '0 */6 * * *',
    p_job_name text DEFAULT 'token-refresh-check'
) RETURNS TABLE (job_name text, schedule text, command text, database_name text)
LANGUAGE plpgsql
STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF p_schedule IS NULL OR pg_catalog.btrim(p_schedule) = ''
       OR p_job_name IS NULL OR p_job_name !~ '^[A-Za-z0-9_.-]{1,60}$' THEN
        RAISE EXCEPTION 'a schedule and a job name (letters, digits, _ . -) are required'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    job_name := p_job_name;
    schedule := p_schedule;
    command := 'CALL auth.refresh_expiring_tokens_job()';
    database_name := pg_catalog.current_database()::text;
    RETURN NEXT;
    job_name := p_job_name || '-history';
    schedule := '41 4 * * *';
    command := 'CALL auth.prune_token_history()';
    database_name := pg_catalog.current_database()::text;
    RETURN NEXT;
    job_name := p_job_name || '-prune';
    schedule := '17 3 * * *';
    -- pg_cron runs this with the job owner's search_path in the cron database, so every
    -- operator and function is qualified (the cron schema there is pg_cron's own: a
    -- schema name is unique, and pg_cron creates it). OPERATOR() has one precedence for
    -- all operators, hence the parentheses.
    command := pg_catalog.format(
        'DELETE FROM cron.job_run_details WHERE end_time OPERATOR(pg_catalog.<) '
        || '(pg_catalog.now() OPERATOR(pg_catalog.-) %L::pg_catalog.interval) '
        || 'AND jobid OPERATOR(pg_catalog.=) ANY (ARRAY(SELECT j.jobid FROM cron.job AS j '
        || 'WHERE j.jobname OPERATOR(pg_catalog.=) ANY (%L::pg_catalog.text[])))',
        '14 days', ARRAY[p_job_name, p_job_name || '-history', p_job_name || '-prune']);
    database_name := coalesce(pg_catalog.current_setting('cron.database_name', TRUE), 'postgres');
    RETURN NEXT;
END;
$$;
COMMENT ON FUNCTION auth.token_refresh_cron_jobs(text, text) IS
'The pg_cron jobs (name, schedule, command, database) that run the batch refresh and the '
'lifecycle pruning for this database, and prune their run history after 14 days.';
REVOKE ALL ON FUNCTION auth.token_refresh_cron_jobs(text, text) FROM public;
GRANT EXECUTE ON FUNCTION auth.token_refresh_cron_jobs(text, text) TO pyvault_admin;
