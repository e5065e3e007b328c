-- The package's pg_cron jobs with their last run and their failures in the last day;
-- no rows where pg_cron is not installed in this database. pg_cron's tables are read in
-- the schema its extension owns (auth._cron_schema), never in whatever is named cron.
CREATE OR REPLACE FUNCTION auth._token_refresh_jobs()
RETURNS TABLE (
    jobid bigint,
    jobname text,
    kind text,
    schedule text,
    active boolean,
    last_status text,
    last_start timestamptz,
    failed_last_day bigint,
    first_failure_last_day timestamptz
)
LANGUAGE plpgsql
STABLE
SET search_path = pg_catalog, pg_temp
AS $$
-- @plpgsql_check_options: performance_warnings = false, extra_warnings = false
-- (it reads pg_cron's tables through dynamic SQL, which the checker cannot see)
DECLARE
    v_cron name := auth._cron_schema();
BEGIN
    IF v_cron IS NULL THEN
        RETURN;
    END IF;
    RETURN QUERY EXECUTE pg_catalog.format($q$
        SELECT j.jobid, j.jobname::text, k.kind, j.schedule::text, j.active,
               r.status::text, r.start_time, f.failed, f.first_failure
        FROM %1$I.job AS j
        CROSS JOIN LATERAL (
            SELECT auth._token_refresh_job_kind(j.command, j.database) AS kind
        ) AS k
        LEFT JOIN LATERAL (
            SELECT d.status, d.start_time FROM %1$I.job_run_details AS d
            WHERE d.jobid = j.jobid ORDER BY d.start_time DESC LIMIT 1
        ) AS r ON TRUE
        CROSS JOIN LATERAL (
            SELECT pg_catalog.count(*) AS failed, pg_catalog.min(d.start_time) AS first_failure
            FROM %1$I.job_run_details AS d
            WHERE d.jobid = j.jobid AND d.status = 'failed'
              AND d.start_time > pg_catalog.now() - interval '24 hours'
        ) AS f
        WHERE k.kind IS NOT NULL
        ORDER BY j.jobid
    $q$, v_cron);
END;
$$;
REVOKE ALL ON FUNCTION auth._token_refresh_jobs() FROM public;
