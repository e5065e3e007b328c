-- Which of the package's pg_cron jobs a job is: 'batch' (it runs the batch refresh for
-- this database), 'history' (the lifecycle pruning of this database), 'prune' (it prunes
-- the run history of those jobs), or NULL. The one
-- job matcher: the diagnostics' SCHEDULE step and the CRON_JOB_FAILED alert both use it
-- (through auth._token_refresh_jobs), and it knows the commands that
-- auth.token_refresh_cron_jobs schedules as well as the seed's direct batch call.
CREATE OR REPLACE FUNCTION auth._token_refresh_job_kind(
    p_command text,
    p_database text
) RETURNS text
LANGUAGE sql
STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT CASE
        WHEN p_database = pg_catalog.current_database()::text
             AND p_command ~ '\mauth\.refresh_expiring_tokens_(job|batch)\M' THEN 'batch'
        WHEN p_database = pg_catalog.current_database()::text
             AND p_command ~ '\mauth\.prune_token_history\M' THEN 'history'
        WHEN p_command ~ '^DELETE FROM cron\.job_run_details WHERE ' THEN 'prune'
    END
$$;
REVOKE ALL ON FUNCTION auth._token_refresh_job_kind(text, text) FROM public;
