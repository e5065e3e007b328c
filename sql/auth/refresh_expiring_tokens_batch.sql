-- Refresh the tokens nobody is using while they approach expiry: extend EXTEND-policy
-- tokens from their hash alone, and enqueue ROTATE-policy tokens in the outbox (with one
-- NOTIFY per batch on channel pyvault_token_refresh) for the holder of the secret to rotate.
-- Works in batches taken FOR UPDATE SKIP LOCKED; a try-lock makes a concurrent run
-- return at once, marked skipped. details is bounded: counts plus the first 20 items.
CREATE OR REPLACE FUNCTION auth.refresh_expiring_tokens_batch(
    p_threshold_days integer DEFAULT NULL,
    p_batch_size integer DEFAULT 1000,
    p_max_tokens integer DEFAULT NULL,
    p_dry_run boolean DEFAULT FALSE
) RETURNS TABLE (
    tokens_found integer,
    tokens_refreshed integer,
    tokens_failed integer,
    details jsonb
)
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    c_lock_key constant bigint := 7023365637463154001;  -- this function's runs only
    c_items constant integer := 20;
    v_started timestamptz := pg_catalog.clock_timestamp();
    v_now timestamptz := pg_catalog.now();
    v_threshold interval := pg_catalog.make_interval(days => p_threshold_days);
    v_due_bound timestamptz;
    v_take integer;
    v_hashes bytea[];
    v_resume_at timestamptz := '-infinity'::timestamptz;
    v_resume_hash bytea := ''::bytea;
    v_extend bytea[];
    v_rotate bytea[];
    v_extended integer := 0;
    v_enqueued integer := 0;
    v_failed integer := 0;
    v_batches integer := 0;
    v_erased integer := 0;
    v_items jsonb := '[]'::jsonb;
    v_n integer;
    v_first_outbox_id bigint;
    v_last_outbox_id bigint;
BEGIN
    IF p_batch_size IS NULL OR p_batch_size NOT BETWEEN 1 AND 100000
       OR p_max_tokens < 0 OR p_threshold_days NOT BETWEEN 0 AND 3650 THEN
        RAISE EXCEPTION 'invalid batch arguments'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'p_batch_size 1..100000, p_max_tokens >= 0, p_threshold_days 0..3650.';
    END IF;
    IF pg_catalog.current_setting('transaction_read_only')::boolean THEN
        RAISE EXCEPTION 'the batch refresh needs a read-write transaction on the primary'
            USING ERRCODE = 'read_only_sql_transaction';
    END IF;
    IF NOT pg_catalog.pg_try_advisory_xact_lock(c_lock_key) THEN
        INSERT INTO auth.token_refresh_batch_run (started_at, skipped, dry_run)
        VALUES (v_started, TRUE, coalesce(p_dry_run, FALSE));
        tokens_found := 0;
        tokens_refreshed := 0;
        tokens_failed := 0;
        details := pg_catalog.jsonb_build_object(
            'skipped', TRUE, 'reason', 'another batch run is in progress');
        RETURN NEXT;
        RETURN;
    END IF;

    -- Every candidate lies in the due index up to this bound. With a threshold: a token
    -- expiring within it has refresh_after <= expires_at - its policy's threshold (or
    -- earlier, when predicted idle), so <= now + threshold - the smallest threshold; a
    -- day of slack covers a daylight-saving hour between sessions and a policy changed
    -- during the run (expires_at is rechecked, so the slack takes nothing extra).
    v_due_bound := v_now + coalesce(
        v_threshold + '1 day'::interval
        - (SELECT pg_catalog.min(p.refresh_threshold) FROM auth.token_refresh_policy AS p),
        '0'::interval);

    -- A dry run is the real run in a subtransaction that is then rolled back: it counts
    -- exactly what a real run would do, by the same filter and the same code (its NOTIFY
    -- is discarded with the subtransaction; PL/pgSQL variables keep their values).
    BEGIN
        LOOP
            v_take := least(p_batch_size, coalesce(p_max_tokens - v_extended - v_enqueued - v_failed,
                                                   p_batch_size));
            EXIT WHEN v_take <= 0;
            -- Keyset: start after the row where the last batch ended, by the due index's
            -- key (refresh_after, token_hash). The rows this transaction has already
            -- handled leave index entries it cannot skip for free (their old versions are
            -- dead only to it), and rescanning them made every batch slower than the one
            -- before (33 ms instead of 2 ms per batch after 80,000 tokens).
            SELECT pg_catalog.array_agg(b.token_hash),
                   (pg_catalog.array_agg(b.refresh_after ORDER BY b.refresh_after DESC, b.token_hash DESC))[1],
                   (pg_catalog.array_agg(b.token_hash ORDER BY b.refresh_after DESC, b.token_hash DESC))[1],
                   pg_catalog.array_agg(b.token_hash) FILTER (WHERE p.strategy = 'EXTEND'),
                   pg_catalog.array_agg(b.token_hash) FILTER (WHERE p.strategy = 'ROTATE')
            INTO v_hashes, v_resume_at, v_resume_hash, v_extend, v_rotate
            FROM (
                SELECT b0.token_hash, b0.refresh_after, b0.token_type
                FROM auth.api_token_bridge AS b0
                WHERE NOT b0.is_revoked AND b0.successor_hk IS NULL AND b0.valid_until > v_now
                  AND (b0.refresh_after, b0.token_hash) > (v_resume_at, v_resume_hash)
                  AND b0.refresh_after <= v_due_bound
                  AND (v_threshold IS NULL
                       OR (b0.expires_at <= v_now + v_threshold
                           -- an explicit threshold may exceed what an extension gains: never
                           -- take a token this run extended again (one at its cap has
                           -- refresh_after 'infinity', past the bound)
                           AND NOT EXISTS (
                               SELECT FROM auth.token_refresh_policy AS p
                               WHERE p.token_type = b0.token_type AND p.strategy = 'EXTEND'
                                 AND b0.expires_at >= v_now + p.time_to_live
                                 AND b0.family_started_at + p.max_lifetime > b0.expires_at)))
                  AND b0.refresh_enqueued_at IS NULL
                ORDER BY b0.refresh_after, b0.token_hash
                LIMIT v_take
                FOR UPDATE OF b0 SKIP LOCKED
            ) AS b
            INNER JOIN auth.token_refresh_policy AS p ON b.token_type = p.token_type;
            EXIT WHEN v_hashes IS NULL;
            v_batches := v_batches + 1;

            IF v_extend IS NOT NULL THEN
                SELECT v_extended + (pg_catalog.count(*) FILTER (WHERE e.o_extended))::integer,
                       v_failed + (pg_catalog.count(*) FILTER (WHERE e.o_capped AND NOT e.o_extended))::integer
                INTO v_extended, v_failed
                FROM auth._extend_tokens(v_extend, 'BATCH', 'pyvault:batch') AS e;
            END IF;

            IF v_rotate IS NOT NULL THEN
                WITH queued AS (
                    INSERT INTO auth.token_refresh_outbox (api_token_hk, tenant_hk, reason, expires_at)
                    SELECT b.api_token_hk, b.tenant_hk,
                           -- Only usage predicts: a refresh point reached before the
                           -- policy threshold. A token taken by an explicit threshold
                           -- alone is expiring soon by the operator's measure.
                           CASE WHEN b.refresh_after <= v_now
                                     AND b.expires_at - p.refresh_threshold > v_now
                               THEN 'PREDICTED_IDLE' ELSE 'EXPIRING_SOON' END,
                           b.expires_at
                    FROM auth.api_token_bridge AS b
                    INNER JOIN auth.token_refresh_policy AS p ON b.token_type = p.token_type
                    WHERE b.token_hash = ANY(v_rotate)
                    ON CONFLICT (api_token_hk) WHERE processed_at IS NULL DO NOTHING
                    RETURNING outbox_id, api_token_hk, tenant_hk, reason, expires_at
                ),
                marked AS (
                    UPDATE auth.api_token_bridge AS b
                    SET refresh_enqueued_at = v_now
                    WHERE b.token_hash = ANY(v_rotate)
                ),
                logged AS (
                    INSERT INTO auth.token_refresh_event (
                        api_token_hk, tenant_hk, refresh_trigger, outcome, reason, old_expires_at
                    )
                    SELECT q.api_token_hk, q.tenant_hk, 'BATCH', 'ENQUEUED', q.reason, q.expires_at
                    FROM queued AS q
                )
                SELECT pg_catalog.count(*)::integer, pg_catalog.min(q.outbox_id),
                       pg_catalog.max(q.outbox_id)
                INTO v_n, v_first_outbox_id, v_last_outbox_id
                FROM queued AS q;
                IF v_n > 0 THEN
                    -- One wake-up per batch, not one per token: a listener reads the outbox.
                    PERFORM pg_catalog.pg_notify('pyvault_token_refresh', pg_catalog.json_build_object(
                        'enqueued', v_n, 'first_outbox_id', v_first_outbox_id,
                        'last_outbox_id', v_last_outbox_id)::text);
                END IF;
                v_enqueued := v_enqueued + v_n;
            END IF;

            IF pg_catalog.jsonb_array_length(v_items) < c_items THEN
                v_items := v_items || (
                    SELECT coalesce(pg_catalog.jsonb_agg(pg_catalog.jsonb_build_object(
                        'token_id', h.api_token_bk, 'token_type', b.token_type,
                        'action', CASE
                            WHEN b.token_hash = ANY(v_rotate) THEN 'ENQUEUED'
                            WHEN b.refresh_after = 'infinity' THEN 'MAX_LIFETIME_REACHED'
                            ELSE 'EXTENDED' END,
                        'expires_at', b.expires_at)), '[]')
                    FROM (
                        SELECT x.token_hash FROM pg_catalog.unnest(v_hashes) AS x (token_hash)
                        LIMIT c_items - pg_catalog.jsonb_array_length(v_items)
                    ) AS u
                    INNER JOIN auth.api_token_bridge AS b ON u.token_hash = b.token_hash
                    INNER JOIN auth.api_token_h AS h ON b.api_token_hk = h.api_token_hk
                );
            END IF;
        END LOOP;

        -- Housekeeping: a kept successor dies with its predecessor (found through the
        -- rotated-token index; auth.prune_token_history later moves the row out).
        UPDATE auth.api_token_bridge AS b
        SET successor_secret = NULL
        WHERE b.successor_hk IS NOT NULL AND NOT b.is_revoked
          AND b.valid_until <= v_now AND b.successor_secret IS NOT NULL;
        GET DIAGNOSTICS v_erased = ROW_COUNT;
        IF coalesce(p_dry_run, FALSE) THEN
            RAISE EXCEPTION USING ERRCODE = 'PVDRY', MESSAGE = 'dry run: roll back';
        END IF;
    EXCEPTION WHEN SQLSTATE 'PVDRY' THEN
        NULL;  -- the dry run ran and was rolled back; the counts above are what it found
    END;

    INSERT INTO auth.token_refresh_batch_run (
        started_at, dry_run, tokens_found, tokens_extended, tokens_enqueued, tokens_failed
    ) VALUES (
        v_started, coalesce(p_dry_run, FALSE), v_extended + v_enqueued + v_failed,
        v_extended, v_enqueued, v_failed
    );

    tokens_found := v_extended + v_enqueued + v_failed;
    tokens_refreshed := CASE WHEN p_dry_run THEN 0 ELSE v_extended END;
    tokens_failed := v_failed;
    details := pg_catalog.jsonb_build_object(
        'skipped', FALSE,
        'dry_run', coalesce(p_dry_run, FALSE),
        'counts', pg_catalog.jsonb_build_object(
            'extended', v_extended, 'enqueued', v_enqueued, 'failed', v_failed),
        'batches', v_batches,
        'successors_erased', v_erased,
        'notify_channel', 'pyvault_token_refresh',
        'items', v_items,
        'items_truncated', v_extended + v_enqueued + v_failed > pg_catalog.jsonb_array_length(v_items),
        'duration_ms', pg_catalog.round(extract(EPOCH FROM pg_catalog.clock_timestamp() - v_started) * 1000)
    );
    RETURN NEXT;
END;
$$;
COMMENT ON FUNCTION auth.refresh_expiring_tokens_batch(integer, integer, integer, boolean) IS
'Batch refresh of tokens within their refresh threshold (or predicted idle): extends '
'EXTEND tokens, enqueues ROTATE tokens in auth.token_refresh_outbox with NOTIFY '
'pyvault_token_refresh. One transaction; CALL auth.refresh_expiring_tokens_job() to '
'commit batch by batch. details: skipped, dry_run, counts {extended, enqueued, failed}, '
'batches, items (first 20, token ids only).';
REVOKE ALL ON FUNCTION auth.refresh_expiring_tokens_batch(integer, integer, integer, boolean)
FROM public;
GRANT EXECUTE ON FUNCTION auth.refresh_expiring_tokens_batch(integer, integer, integer, boolean)
TO pyvault_admin;
