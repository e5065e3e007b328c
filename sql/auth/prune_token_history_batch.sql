-- One batch of lifecycle pruning (DESIGN.md section 10), at most p_batch_size rows of
-- each kind: rotated tokens whose grace has ended move from the bridge and the vault to
-- auth.spent_token; families whose newest token expired longer than the retention ago
-- are removed whole; events, batch runs and settled outbox rows past their retention
-- are deleted. more says whether a kind filled its batch. CALL auth.prune_token_history()
-- runs it batch by batch, committing each. Try-locked: a second run skips at once.
CREATE OR REPLACE FUNCTION auth.prune_token_history_batch(
    p_batch_size integer DEFAULT 1000
) RETURNS TABLE (
    tokens_spent integer,
    families_removed integer,
    tokens_removed integer,
    rows_deleted integer,
    more boolean,
    skipped boolean
)
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    c_lock_key constant bigint := 7023365637463154002;  -- the batch refresh's key + 1
    v_now timestamptz := pg_catalog.now();
    v_keep auth.retention_policy;
    v_spent bytea[];
    v_families bytea[];
    v_gone bytea[];
    v_n integer;
BEGIN
    tokens_spent := 0;
    families_removed := 0;
    tokens_removed := 0;
    rows_deleted := 0;
    more := FALSE;
    skipped := FALSE;
    IF p_batch_size IS NULL OR p_batch_size < 1 OR p_batch_size > 100000 THEN
        RAISE EXCEPTION 'p_batch_size must be between 1 and 100000'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF NOT pg_catalog.pg_try_advisory_xact_lock(c_lock_key) THEN
        skipped := TRUE;
        RETURN NEXT;
        RETURN;
    END IF;
    SELECT r.* INTO STRICT v_keep FROM auth.retention_policy AS r;

    -- 1. Rotated tokens past their grace: what reuse detection needs goes to spent_token.
    WITH dead AS (
        SELECT b.token_hash, b.api_token_hk, b.family_hk, b.generation
        FROM auth.api_token_bridge AS b
        WHERE b.successor_hk IS NOT NULL AND NOT b.is_revoked AND b.valid_until <= v_now
        ORDER BY b.valid_until
        LIMIT p_batch_size
        FOR UPDATE OF b SKIP LOCKED
    ),
    moved AS (
        INSERT INTO auth.spent_token (token_key, family_hk, generation)
        SELECT auth._hash_key(d.token_hash), d.family_hk, d.generation
        FROM dead AS d
    )
    SELECT pg_catalog.array_agg(d.api_token_hk) INTO v_spent FROM dead AS d;
    tokens_spent := coalesce(pg_catalog.cardinality(v_spent), 0);

    -- 2. Dead families: the newest token (the head, which outlives the others) expired
    -- longer than the retention ago. A revoked family waits for its head's expiry too.
    SELECT pg_catalog.array_agg(h.family_hk) INTO v_families
    FROM (
        SELECT b.family_hk FROM auth.api_token_bridge AS b
        WHERE b.successor_hk IS NULL AND b.expires_at < v_now - v_keep.dead_families
        ORDER BY b.expires_at
        LIMIT p_batch_size
        FOR UPDATE OF b SKIP LOCKED
    ) AS h;
    families_removed := coalesce(pg_catalog.cardinality(v_families), 0);
    IF v_families IS NOT NULL THEN
        DELETE FROM auth.spent_token AS s WHERE s.family_hk = ANY(v_families);
        GET DIAGNOSTICS v_n = ROW_COUNT;
        tokens_removed := v_n;
        SELECT pg_catalog.array_agg(b.api_token_hk) INTO v_gone
        FROM auth.api_token_bridge AS b WHERE b.family_hk = ANY(v_families);
        tokens_removed := tokens_removed + coalesce(pg_catalog.cardinality(v_gone), 0);
    END IF;

    -- The vault rows of both: referencing tables first, the hub last.
    v_gone := coalesce(v_spent, '{}') || coalesce(v_gone, '{}');
    IF pg_catalog.cardinality(v_gone) > 0 THEN
        DELETE FROM auth.api_token_bridge AS b WHERE b.api_token_hk = ANY(v_gone);
        DELETE FROM auth.api_token_usage AS u WHERE u.api_token_hk = ANY(v_gone);
        DELETE FROM auth.refresher_token AS r WHERE r.api_token_hk = ANY(v_gone);
        DELETE FROM auth.token_refresh_outbox AS o
        WHERE o.api_token_hk = ANY(v_gone) AND o.processed_at IS NULL;
        DELETE FROM auth.token_rotation_l AS l
        WHERE l.predecessor_hk = ANY(v_gone) OR l.successor_hk = ANY(v_gone);
        DELETE FROM auth.user_token_l AS l WHERE l.api_token_hk = ANY(v_gone);
        DELETE FROM auth.api_token_s AS s WHERE s.api_token_hk = ANY(v_gone);
        DELETE FROM auth.api_token_h AS h WHERE h.api_token_hk = ANY(v_gone);
    END IF;

    -- 3. History past its retention, oldest first.
    DELETE FROM auth.token_refresh_event AS e
    WHERE e.event_id IN (
        SELECT x.event_id FROM auth.token_refresh_event AS x
        WHERE x.occurred_at < v_now - v_keep.refresh_events
        ORDER BY x.occurred_at LIMIT p_batch_size
    );
    GET DIAGNOSTICS v_n = ROW_COUNT;
    rows_deleted := v_n;
    more := v_n = p_batch_size;
    DELETE FROM auth.security_event AS e
    WHERE e.event_id IN (
        SELECT x.event_id FROM auth.security_event AS x
        WHERE x.occurred_at < v_now - v_keep.security_events
        ORDER BY x.occurred_at LIMIT p_batch_size
    );
    GET DIAGNOSTICS v_n = ROW_COUNT;
    rows_deleted := rows_deleted + v_n;
    more := more OR v_n = p_batch_size;
    DELETE FROM auth.token_refresh_batch_run AS r
    WHERE r.run_id IN (
        SELECT x.run_id FROM auth.token_refresh_batch_run AS x
        WHERE x.started_at < v_now - v_keep.batch_runs
        ORDER BY x.started_at LIMIT p_batch_size
    );
    GET DIAGNOSTICS v_n = ROW_COUNT;
    rows_deleted := rows_deleted + v_n;
    more := more OR v_n = p_batch_size;
    DELETE FROM auth.token_refresh_outbox AS o
    WHERE o.outbox_id IN (
        SELECT x.outbox_id FROM auth.token_refresh_outbox AS x
        WHERE x.processed_at < v_now - v_keep.outbox
        ORDER BY x.outbox_id LIMIT p_batch_size
    );
    GET DIAGNOSTICS v_n = ROW_COUNT;
    rows_deleted := rows_deleted + v_n;
    more := more OR v_n = p_batch_size
        OR tokens_spent = p_batch_size OR families_removed = p_batch_size;
    RETURN NEXT;
END;
$$;
COMMENT ON FUNCTION auth.prune_token_history_batch(integer) IS
'One batch of lifecycle pruning: spent rotated tokens leave the bridge and the vault for '
'auth.spent_token, dead families past auth.retention_policy.dead_families are removed, and '
'events, batch runs and settled outbox rows past their retention are deleted. Returns the '
'counts, whether more is left, and whether another run held the lock (skipped).';
REVOKE ALL ON FUNCTION auth.prune_token_history_batch(integer) FROM public;
GRANT EXECUTE ON FUNCTION auth.prune_token_history_batch(integer) TO pyvault_admin;
