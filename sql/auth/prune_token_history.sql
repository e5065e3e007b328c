-- The scheduled lifecycle job: auth.prune_token_history_batch until nothing is left,
-- committing after each batch, so locks are held for one batch only. A run that finds
-- another one's lock returns at once. Like auth.refresh_expiring_tokens_job it cannot
-- carry SET search_path (it COMMITs), so it resolves no name through its caller's path:
-- qualified types and functions, and pg_catalog's functions instead of operators.
CREATE OR REPLACE PROCEDURE auth.prune_token_history(
    p_batch_size integer DEFAULT 1000
)
LANGUAGE plpgsql
AS $$
DECLARE
    v_run record;
    v_spent pg_catalog.int4 := 0;
    v_families pg_catalog.int4 := 0;
    v_rows pg_catalog.int4 := 0;
    v_batches pg_catalog.int4 := 0;
BEGIN
    LOOP
        SELECT r.* INTO v_run
        FROM auth.prune_token_history_batch(p_batch_size => p_batch_size) AS r;
        COMMIT;
        IF v_run.skipped THEN
            RAISE NOTICE 'pyvault-tokens: another prune run is in progress; skipped';
            RETURN;
        END IF;
        v_spent := pg_catalog.int4pl(v_spent, v_run.tokens_spent);
        v_families := pg_catalog.int4pl(v_families, v_run.families_removed);
        v_rows := pg_catalog.int4pl(v_rows, v_run.rows_deleted);
        v_batches := pg_catalog.int4pl(v_batches, 1);
        EXIT WHEN NOT v_run.more;
    END LOOP;
    RAISE NOTICE 'pyvault-tokens: % spent tokens moved, % dead families removed, % history rows deleted, in % batches',
        v_spent, v_families, v_rows, v_batches;
END;
$$;
COMMENT ON PROCEDURE auth.prune_token_history(integer) IS -- noqa: LT01
'The scheduled lifecycle pruning: one committed batch at a time until nothing is left.';
REVOKE ALL ON PROCEDURE auth.prune_token_history(integer) FROM public;
GRANT EXECUTE ON PROCEDURE auth.prune_token_history(integer) TO pyvault_admin;
