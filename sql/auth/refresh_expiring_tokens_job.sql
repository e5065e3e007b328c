-- The scheduled batch job: run auth.refresh_expiring_tokens_batch one batch at a time,
-- committing after each, so row locks are held for one batch only and a crash loses at
-- most the batch in flight. A session advisory lock keeps a second run out; that run
-- returns at once. COMMIT is not allowed in a definer-rights procedure or one with SET,
-- so this procedure runs with its caller's rights and calls only the function above.
CREATE OR REPLACE PROCEDURE auth.refresh_expiring_tokens_job(
    p_batch_size integer DEFAULT 1000
)
LANGUAGE plpgsql
AS $$
DECLARE
    c_lock_key constant bigint := 7023365637463154001;  -- as in refresh_expiring_tokens_batch
    v_run record;
    v_found integer := 0;
    v_refreshed integer := 0;
    v_failed integer := 0;
    v_batches integer := 0;
BEGIN
    IF NOT pg_catalog.pg_try_advisory_lock(c_lock_key) THEN
        RAISE NOTICE 'pyvault-tokens: another batch run is in progress; skipped';
        RETURN;
    END IF;
    LOOP
        SELECT r.* INTO v_run
        FROM auth.refresh_expiring_tokens_batch(
            p_batch_size => p_batch_size, p_max_tokens => p_batch_size
        ) AS r;
        COMMIT;
        EXIT WHEN v_run.tokens_found = 0;
        v_found := v_found + v_run.tokens_found;
        v_refreshed := v_refreshed + v_run.tokens_refreshed;
        v_failed := v_failed + v_run.tokens_failed;
        v_batches := v_batches + 1;
    END LOOP;
    PERFORM pg_catalog.pg_advisory_unlock(c_lock_key);
    RAISE NOTICE 'pyvault-tokens: % tokens found, % extended, % failed, in % batches',
        v_found, v_refreshed, v_failed, v_batches;
END;
$$;
COMMENT ON PROCEDURE auth.refresh_expiring_tokens_job(integer) IS -- noqa: LT01
'The scheduled form of the batch refresh: one batch per transaction until none is due.';
REVOKE ALL ON PROCEDURE auth.refresh_expiring_tokens_job(integer) FROM public;
GRANT EXECUTE ON PROCEDURE auth.refresh_expiring_tokens_job(integer) TO pyvault_admin;
