-- The scheduled batch job: run auth.refresh_expiring_tokens_batch one batch at a time,
-- committing after each, so row locks are held for one batch only and a crash loses at
-- most the batch in flight. Each batch takes the batch function's transaction try-lock;
-- a second run that finds it taken returns at once. No lock is held across commits, so
-- a run that fails half-way leaves nothing behind that blocks the next one.
-- COMMIT is not allowed in a definer-rights procedure or one with SET, so this
-- procedure runs with its caller's rights and calls only the function above.
CREATE OR REPLACE PROCEDURE auth.refresh_expiring_tokens_job(
    p_batch_size integer DEFAULT 1000
)
LANGUAGE plpgsql
AS $$
DECLARE
    v_run record;
    v_found integer := 0;
    v_refreshed integer := 0;
    v_failed integer := 0;
    v_batches integer := 0;
BEGIN
    LOOP
        SELECT r.* INTO v_run
        FROM auth.refresh_expiring_tokens_batch(
            p_batch_size => p_batch_size, p_max_tokens => p_batch_size
        ) AS r;
        COMMIT;
        IF (v_run.details ->> 'skipped')::boolean THEN
            RAISE NOTICE 'pyvault-tokens: another batch run is in progress; skipped';
            RETURN;
        END IF;
        EXIT WHEN v_run.tokens_found = 0;
        v_found := v_found + v_run.tokens_found;
        v_refreshed := v_refreshed + v_run.tokens_refreshed;
        v_failed := v_failed + v_run.tokens_failed;
        v_batches := v_batches + 1;
    END LOOP;
    RAISE NOTICE 'pyvault-tokens: % tokens found, % extended, % failed, in % batches',
        v_found, v_refreshed, v_failed, v_batches;
END;
$$;
COMMENT ON PROCEDURE auth.refresh_expiring_tokens_job(integer) IS -- noqa: LT01
'The scheduled form of the batch refresh: one batch per transaction until none is due.';
REVOKE ALL ON PROCEDURE auth.refresh_expiring_tokens_job(integer) FROM public;
GRANT EXECUTE ON PROCEDURE auth.refresh_expiring_tokens_job(integer) TO pyvault_admin;
