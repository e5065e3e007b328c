-- Every call of the batch refresh, newest first when ordered by started_at: when it ran,
-- how long it took and what it did (for the exporter's last-run metrics).
CREATE OR REPLACE VIEW auth.refresh_batch_runs AS
SELECT
    r.run_id,
    r.started_at,
    r.finished_at,
    extract(EPOCH FROM r.finished_at - r.started_at)::double precision AS duration_seconds,
    r.skipped,
    r.dry_run,
    r.tokens_found,
    r.tokens_extended,
    r.tokens_enqueued,
    r.tokens_failed
FROM auth.token_refresh_batch_run AS r;
COMMENT ON VIEW auth.refresh_batch_runs IS
'One row per call of auth.refresh_expiring_tokens_batch (CALL auth.refresh_expiring_tokens_job() '
'makes one per batch), skipped runs and dry runs included: start, finish, duration in '
'seconds and the tokens found, extended, enqueued and failed.';
REVOKE ALL ON auth.refresh_batch_runs FROM public;
GRANT SELECT ON auth.refresh_batch_runs TO pyvault_monitor;
