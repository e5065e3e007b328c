-- The refresh engine: rotate or extend one token under its row lock.
-- Concurrent callers queue on the lock; every one after the first finds the successor
-- kept for the predecessor and returns it (ALREADY_REFRESHED), so one token never gets
-- two successors and every caller gets the same new token.
-- p_force_limited: the caller is not an admin, so a force obeys force_min_interval.
CREATE OR REPLACE FUNCTION auth._refresh_token(
    p_token text,
    p_threshold interval,
    p_force boolean,
    p_trigger text,
    p_force_limited boolean DEFAULT FALSE,
    OUT o_success boolean,
    OUT o_new_token text,
    OUT o_expires_at timestamptz,
    OUT o_refresh_reason varchar(100),
    OUT o_message text
)
LANGUAGE plpgsql
AS $$
DECLARE
    v_now timestamptz := pg_catalog.now();
    v_hash bytea := pg_catalog.sha256(pg_catalog.convert_to(p_token, 'UTF8'));
    v_token auth.api_token_bridge;
    v_policy auth.token_refresh_policy;
    v_threshold interval;
    v_new_expires_at timestamptz;
    v_successor record;
    v_source text := 'pyvault:refresh:' || pg_catalog.lower(p_trigger);
    v_changed_at timestamptz;
BEGIN
    o_success := FALSE;
    SELECT b.* INTO v_token
    FROM auth.api_token_bridge AS b
    WHERE b.token_hash = v_hash
    FOR UPDATE;
    IF NOT FOUND OR v_token.is_revoked OR v_now >= v_token.valid_until THEN
        SELECT r.o_reason, r.o_message INTO o_refresh_reason, o_message
        FROM auth._refusal(p_token, v_token, v_source) AS r;
        IF o_refresh_reason = 'TOKEN_INVALID' AND v_token.token_hash IS NOT NULL THEN
            PERFORM auth._log_refresh_event(v_token, p_trigger, 'REJECTED', o_refresh_reason,
                                            p_detail => pg_catalog.jsonb_build_object('message', o_message));
        END IF;
        RETURN;
    END IF;
    SELECT p.* INTO STRICT v_policy
    FROM auth.token_refresh_policy AS p
    WHERE p.token_type = v_token.token_type;

    IF v_token.successor_secret IS NOT NULL THEN
        o_new_token := auth._successor_token(v_token.successor_secret, p_token);
        SELECT b.expires_at INTO STRICT o_expires_at
        FROM auth.api_token_bridge AS b
        WHERE b.api_token_hk = v_token.successor_hk;
        o_success := TRUE;
        o_refresh_reason := 'ALREADY_REFRESHED';
        o_message := 'Token was already refreshed; returning its successor';
        PERFORM auth._log_refresh_event(v_token, p_trigger, 'ALREADY_REFRESHED', o_refresh_reason,
                                        v_token.successor_hk, o_expires_at);
        RETURN;
    END IF;

    IF p_force AND p_force_limited THEN
        -- The current satellite row was written when the token was issued or last
        -- refreshed, by rotation or extension alike. A refused force writes nothing.
        SELECT s.load_date INTO v_changed_at
        FROM auth.api_token_s AS s
        WHERE s.api_token_hk = v_token.api_token_hk AND s.load_end_date IS NULL;
        IF v_changed_at > v_now - v_policy.force_min_interval THEN
            o_refresh_reason := 'FORCE_RATE_LIMITED';
            o_expires_at := v_token.expires_at;
            o_message := 'This token was issued or refreshed less than '
                || v_policy.force_min_interval::text || ' ago; a forced refresh must wait';
            RETURN;
        END IF;
    END IF;

    v_threshold := coalesce(p_threshold, v_policy.refresh_threshold);
    o_refresh_reason := CASE
        WHEN p_force THEN 'FORCED'
        WHEN v_now >= v_token.expires_at - v_threshold THEN 'EXPIRING_SOON'
        WHEN v_now >= v_token.refresh_after THEN 'PREDICTED_IDLE'
    END;
    IF o_refresh_reason IS NULL THEN
        o_refresh_reason := 'NO_REFRESH_NEEDED';
        o_expires_at := v_token.expires_at;
        o_message := 'Token expires in ' || (v_token.expires_at - v_now)::text
            || ', outside the refresh threshold of ' || v_threshold::text;
        PERFORM auth._log_refresh_event(v_token, p_trigger, 'NOT_NEEDED', o_refresh_reason);
        RETURN;
    END IF;

    IF v_token.family_started_at + v_policy.max_lifetime <= v_token.expires_at THEN
        o_refresh_reason := 'MAX_LIFETIME_REACHED';
        o_expires_at := v_token.expires_at;
        o_message := 'The token family has reached its maximum lifetime of '
            || v_policy.max_lifetime::text;
        PERFORM auth._log_refresh_event(v_token, p_trigger, 'REJECTED', o_refresh_reason);
        RETURN;
    END IF;
    -- Never shorten a token's life; never pass the family's maximum lifetime.
    v_new_expires_at := auth._capped_expiry(v_now, v_policy.time_to_live,
                                            v_token.family_started_at, v_policy.max_lifetime,
                                            v_token.expires_at);
    IF v_policy.strategy = 'EXTEND' AND v_new_expires_at = v_token.expires_at THEN
        o_refresh_reason := 'NO_REFRESH_NEEDED';
        o_expires_at := v_token.expires_at;
        o_message := 'Extending would not move the expiry beyond ' || v_token.expires_at::text;
        PERFORM auth._log_refresh_event(v_token, p_trigger, 'NOT_NEEDED', o_refresh_reason);
        RETURN;
    END IF;

    IF v_policy.strategy = 'EXTEND' THEN
        PERFORM auth._extend_tokens(ARRAY[v_hash], p_trigger, v_source);
        o_message := 'Token expiry extended (' || o_refresh_reason || ')';
        o_refresh_reason := 'EXPIRY_EXTENDED';
        UPDATE auth.token_refresh_outbox AS o
        SET processed_at = pg_catalog.clock_timestamp(), outcome = o_refresh_reason
        WHERE o.api_token_hk = v_token.api_token_hk AND o.processed_at IS NULL;
    ELSE
        v_successor := auth._issue_token(
            v_token.user_hk, v_token.tenant_hk, v_token.scope, v_token.token_type,
            v_new_expires_at, v_source, v_token.family_hk, v_token.family_started_at,
            v_token.generation + 1, v_token.api_token_hk
        );
        -- One statement (each PL/pgSQL statement pays its own executor start): the
        -- lineage link, the end of the grandparent (only the immediate predecessor gets
        -- grace), the refresh event, the outbox entry it settles, and the successor kept
        -- for the predecessor's holder.
        WITH lineage AS (
            INSERT INTO auth.token_rotation_l (
                link_token_rotation_hk, predecessor_hk, successor_hk, tenant_hk, record_source
            ) VALUES (
                auth._hash_key(v_token.api_token_hk || v_successor.o_api_token_hk),
                v_token.api_token_hk, v_successor.o_api_token_hk, v_token.tenant_hk, v_source
            )
        ),
        grandparent AS (
            UPDATE auth.api_token_bridge AS b
            SET valid_until = least(b.valid_until, v_now), successor_secret = NULL
            WHERE b.api_token_hk = v_token.predecessor_hk
        ),
        logged AS (
            INSERT INTO auth.token_refresh_event (
                api_token_hk, tenant_hk, refresh_trigger, outcome, reason, successor_hk,
                old_expires_at, new_expires_at
            ) VALUES (
                v_token.api_token_hk, v_token.tenant_hk, p_trigger, 'ROTATED', o_refresh_reason,
                v_successor.o_api_token_hk, v_token.expires_at, v_new_expires_at
            )
        ),
        settled AS (
            UPDATE auth.token_refresh_outbox AS o
            SET processed_at = pg_catalog.clock_timestamp(), outcome = o_refresh_reason
            WHERE o.api_token_hk = v_token.api_token_hk AND o.processed_at IS NULL
        )
        UPDATE auth.api_token_bridge AS b
        SET successor_hk = v_successor.o_api_token_hk,
            successor_secret = extensions.encrypt(
                pg_catalog.convert_to(v_successor.o_token, 'UTF8'), auth._successor_key(p_token), 'aes'
            ),
            refresh_after = 'infinity'
        WHERE b.token_hash = v_hash;
        o_new_token := v_successor.o_token;
        o_message := 'Token rotated (' || o_refresh_reason || ')';
    END IF;
    o_success := TRUE;
    o_expires_at := v_new_expires_at;
END;
$$;
REVOKE ALL ON FUNCTION auth._refresh_token(text, interval, boolean, text, boolean) FROM public;
