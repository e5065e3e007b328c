-- validate_and_refresh_api_token for every case its one statement does not answer: a
-- malformed string, an unknown, revoked, expired or under-scoped token, a use to record,
-- a refresh due, a successor to hand out, a first use to record, a family at its
-- maximum lifetime. It reads the row again and decides branch by branch, so a row that
-- changed since the first read gets the answer its new state calls for.
CREATE OR REPLACE FUNCTION auth._validate_and_refresh_in_full(
    p_token text,
    p_required_scope text
) RETURNS TABLE (
    is_valid boolean,
    user_hk bytea,
    tenant_hk bytea,
    scope text[],
    expires_at timestamptz,
    new_token text,
    was_refreshed boolean,
    refresh_reason varchar(100),
    message text
)
LANGUAGE plpgsql
AS $$
DECLARE
    v_token auth.api_token_bridge;
    v_refresh record;
    v_state text;
    v_error text;
    v_refreshed boolean := FALSE;
    v_reason text;
    v_lock_timeout text;
    v_hand_out boolean := FALSE;
BEGIN
    is_valid := FALSE;
    was_refreshed := FALSE;
    refresh_reason := 'TOKEN_INVALID';
    IF NOT auth._is_token_shaped(p_token) THEN
        message := 'Token format is invalid';
        RETURN NEXT;
        RETURN;
    END IF;
    IF p_required_scope IS NULL THEN
        message := 'Required scope is missing';
        RETURN NEXT;
        RETURN;
    END IF;
    SELECT b.* INTO v_token
    FROM auth.api_token_bridge AS b
    WHERE b.token_hash = pg_catalog.sha256(pg_catalog.convert_to(p_token, 'UTF8'));
    IF NOT FOUND OR v_token.is_revoked OR pg_catalog.now() >= v_token.valid_until THEN
        SELECT r.o_reason, r.o_message INTO refresh_reason, message
        FROM auth._refusal(p_token, v_token, 'pyvault:validate') AS r;
        RETURN NEXT;
        RETURN;
    ELSIF NOT p_required_scope = ANY(v_token.scope) THEN
        refresh_reason := 'INSUFFICIENT_SCOPE';
        message := 'Token lacks the required scope';
        RETURN NEXT;
        RETURN;
    END IF;

    is_valid := TRUE;
    user_hk := v_token.user_hk;
    tenant_hk := v_token.tenant_hk;
    scope := v_token.scope;
    expires_at := v_token.expires_at;
    IF pg_catalog.now() >= v_token.record_use_after
       AND NOT pg_catalog.current_setting('transaction_read_only')::boolean THEN
        -- A recorded use may move the refresh point earlier (predictive refresh). Only
        -- earlier: the row it returns may already carry a concurrent rotation that the
        -- rest of this call's snapshot does not show.
        v_token.refresh_after := least(v_token.refresh_after, auth._record_token_use(
            v_token.token_hash, v_token.api_token_hk, v_token.tenant_hk,
            v_token.token_type, v_token.predecessor_hk
        ));
    END IF;

    IF v_token.successor_secret IS NOT NULL THEN
        v_hand_out := TRUE;  -- rotated already and still in grace: the same successor again
    ELSIF v_token.predecessor_hk IS NOT NULL AND v_token.last_used_at IS NULL
          AND pg_catalog.current_setting('transaction_read_only')::boolean THEN
        -- A successor's first use starts its predecessor's grace window, and only the
        -- primary can record it: a caller on a replica must ask the primary once, or the
        -- predecessor would stay valid until its own expiry.
        refresh_reason := 'REFRESH_DEFERRED_READ_ONLY';
        message := 'Token valid; its first use must be recorded on the primary';
    ELSIF v_token.predecessor_hk IS NOT NULL AND v_token.last_used_at IS NULL
          AND pg_catalog.current_setting('transaction_isolation') = 'serializable' THEN
        refresh_reason := 'REFRESH_DEFERRED_SNAPSHOT';
        message := 'Token valid; its first use must be recorded outside a SERIALIZABLE transaction';
    ELSIF pg_catalog.now() < v_token.refresh_after THEN
        IF v_token.refresh_after = 'infinity' THEN
            refresh_reason := 'MAX_LIFETIME_REACHED';
            message := 'Token is valid; it cannot be refreshed past its family''s maximum lifetime';
        ELSE
            refresh_reason := 'NO_REFRESH_NEEDED';
            message := 'Token is valid';
        END IF;
    ELSIF pg_catalog.current_setting('transaction_read_only')::boolean THEN
        refresh_reason := 'REFRESH_DEFERRED_READ_ONLY';
        message := 'Token valid; refresh is due but this transaction is read-only';
    ELSIF pg_catalog.current_setting('transaction_isolation') = 'serializable' THEN
        -- A write here could fail the caller's commit; its next call in its own
        -- transaction (or any other caller's) refreshes the token.
        refresh_reason := 'REFRESH_DEFERRED_SNAPSHOT';
        message := 'Token valid; refresh is due but this transaction is SERIALIZABLE';
    ELSE
        -- Documented boundary: a refresh that fails for any reason must not turn a valid
        -- token into a failed request. A lock held longer than the policy's
        -- refresh_lock_wait (the seed's one-transaction batch holds its rows for seconds)
        -- answers REFRESH_BUSY; a row changed since a REPEATABLE READ snapshot answers
        -- REFRESH_DEFERRED_SNAPSHOT; any other error is recorded as a FAILED event.
        BEGIN
            v_lock_timeout := pg_catalog.current_setting('lock_timeout');
            PERFORM pg_catalog.set_config('lock_timeout', (
                SELECT greatest(1, (extract(EPOCH FROM p.refresh_lock_wait) * 1000)::bigint)::text
                FROM auth.token_refresh_policy AS p WHERE p.token_type = v_token.token_type
            ), TRUE);
            v_refresh := auth._refresh_token(p_token, NULL, FALSE, 'ON_DEMAND');
            -- Restored by hand: a committed subtransaction keeps a local setting.
            PERFORM pg_catalog.set_config('lock_timeout', v_lock_timeout, TRUE);
            v_refreshed := v_refresh.o_success;
            v_reason := v_refresh.o_refresh_reason;
            v_error := v_refresh.o_message;
        EXCEPTION WHEN OTHERS THEN
            GET STACKED DIAGNOSTICS v_state = RETURNED_SQLSTATE, v_error = MESSAGE_TEXT;
            v_reason := CASE v_state WHEN '55P03' THEN 'REFRESH_BUSY'
                                     WHEN '40001' THEN 'REFRESH_DEFERRED_SNAPSHOT' END;
            IF v_reason IS NULL THEN
                PERFORM auth._log_refresh_event(
                    v_token, 'ON_DEMAND', 'FAILED', 'REFRESH_FAILED',
                    p_detail => pg_catalog.jsonb_build_object('sqlstate', v_state, 'error', v_error)
                );
            END IF;
        END;
        IF v_refreshed THEN
            new_token := v_refresh.o_new_token;
            expires_at := v_refresh.o_expires_at;
            was_refreshed := TRUE;
            refresh_reason := v_refresh.o_refresh_reason;
            message := 'Token valid and refreshed: ' || v_refresh.o_message;
        ELSIF v_reason = 'NO_REFRESH_NEEDED' THEN
            -- Refreshed meanwhile (the batch job extended it while we waited for its lock).
            expires_at := v_refresh.o_expires_at;
            refresh_reason := 'NO_REFRESH_NEEDED';
            message := 'Token is valid';
        ELSIF v_reason IN ('TOKEN_INVALID', 'REUSE_DETECTED') THEN
            -- Revoked (or expired, or found reused) while we waited for its row: the
            -- locked row is the truth, and it says no.
            is_valid := FALSE;
            user_hk := NULL;
            tenant_hk := NULL;
            scope := NULL;
            expires_at := NULL;
            refresh_reason := v_reason;
            message := v_error;
        ELSIF v_reason = 'REFRESH_BUSY' THEN
            -- The holder is often a concurrent refresh of this very token (callers queue
            -- on its row): read the row as committed now, without a lock, and hand out
            -- the successor it may have left.
            SELECT b.* INTO v_token FROM auth.api_token_bridge AS b
            WHERE b.token_hash = v_token.token_hash;
            IF v_token.successor_secret IS NOT NULL AND NOT v_token.is_revoked THEN
                v_hand_out := TRUE;
            ELSE
                refresh_reason := v_reason;
                message := 'Token valid; refresh is due but its row is locked by another transaction';
            END IF;
        ELSIF v_reason = 'REFRESH_DEFERRED_SNAPSHOT' THEN
            refresh_reason := v_reason;
            message := 'Token valid; it changed since this transaction''s snapshot, so the refresh waits';
        ELSE
            refresh_reason := 'REFRESH_FAILED';
            message := 'Token valid but refresh failed: ' || coalesce(v_error, 'unknown error');
        END IF;
    END IF;
    IF v_hand_out THEN
        -- The successor kept for this token (found on the first read, or on the re-read
        -- after a lock wait): every caller that presents the predecessor gets the same one.
        new_token := auth._successor_token(v_token.successor_secret, p_token);
        SELECT b.expires_at INTO expires_at
        FROM auth.api_token_bridge AS b
        WHERE b.api_token_hk = v_token.successor_hk;
        was_refreshed := TRUE;
        refresh_reason := 'ALREADY_REFRESHED';
        message := 'Token valid; it was refreshed already, use the new token';
    END IF;
    RETURN NEXT;
END;
$$;
REVOKE ALL ON FUNCTION auth._validate_and_refresh_in_full(text, text) FROM public;
