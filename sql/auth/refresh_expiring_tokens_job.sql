-- The scheduled batch job: run auth.refresh_expiring_tokens_batch one batch at a time,
-- committing after each, so row locks are held for one batch only and a crash loses at
-- most the batch in flight. Each batch takes the batch function's transaction try-lock;
-- a second run that finds it taken returns at once. No lock is held across commits, so
-- a run that fails half-way leaves nothing behind that blocks the next one.
-- COMMIT is not allowed in a definer-rights procedure or one with SET, so this procedure
-- runs with its caller's rights and its caller's search_path, which another login may
-- have filled with look-alike operators, functions and types (pg_cron runs it with the
-- job owner's path). So the body resolves no name through that path: every type and
-- function is schema-qualified, and each operator is written as the pg_catalog function
-- behind it (int4pl for +, int4eq for =), which is resolved in pg_catalog alone.
CREATE OR REPLACE PROCEDURE auth.refresh_expiring_tokens_job(
    p_batch_size integer DEFAULT 1000
)
LANGUAGE plpgsql
AS $$
DECLARE
    v_run record;
    v_found pg_catalog.int4 := 0;
    v_refreshed pg_catalog.int4 := 0;
    v_failed pg_catalog.int4 := 0;
    v_batches pg_catalog.int4 := 0;
BEGIN
    LOOP
        SELECT r.* INTO v_run
        FROM auth.refresh_expiring_tokens_batch(
            p_batch_size => p_batch_size, p_max_tokens => p_batch_size
        ) AS r;
        COMMIT;
        IF pg_catalog.jsonb_extract_path_text(v_run.details, 'skipped')::pg_catalog.bool THEN
            RAISE NOTICE 'pyvault-tokens: another batch run is in progress; skipped';
            RETURN;
        END IF;
        EXIT WHEN pg_catalog.int4eq(v_run.tokens_found, 0);
        v_found := pg_catalog.int4pl(v_found, v_run.tokens_found);
        v_refreshed := pg_catalog.int4pl(v_refreshed, v_run.tokens_refreshed);
        v_failed := pg_catalog.int4pl(v_failed, v_run.tokens_failed);
        v_batches := pg_catalog.int4pl(v_batches, 1);
    END LOOP;
    RAISE NOTICE 'pyvault-tokens: % tokens found, % extended, % failed, in % batches',
        v_found, v_refreshed, v_failed, v_batches;
END;
$$;
COMMENT ON PROCEDURE auth.refresh_expiring_tokens_job(integer) IS -- noqa: LT01
'The scheduled form of the batch refresh: one batch per transaction until none is due.';
REVOKE ALL ON PROCEDURE auth.refresh_expiring_tokens_job(integer) FROM public;
GRANT EXECUTE ON PROCEDURE auth.refresh_expiring_tokens_job(integer) TO pyvault_admin;
