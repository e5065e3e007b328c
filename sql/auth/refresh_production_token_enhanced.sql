-- Refresh a token on its own: rotate or extend it when it is within the threshold
-- (or always, with p_force). Presenting a rotated token again returns the same successor.
-- p_trigger lets the refresher service label its calls SERVICE in the event log.
-- A login that is not the admin role (pyvault_admin) may force a token's refresh at most once per the
-- policy's force_min_interval (FORCE_RATE_LIMITED otherwise, and nothing is written).
CREATE OR REPLACE FUNCTION auth.refresh_production_token_enhanced(
    p_token text,
    p_threshold_days integer DEFAULT NULL,
    p_force boolean DEFAULT FALSE,
    p_trigger text DEFAULT NULL
) RETURNS TABLE (
    success boolean,
    new_token text,
    expires_at timestamptz,
    refresh_reason varchar(100),
    message text
)
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_refresh record;
    v_deferred boolean := FALSE;
BEGIN
    success := FALSE;
    IF NOT auth._is_token_shaped(p_token) THEN
        refresh_reason := 'TOKEN_INVALID';
        message := 'Token format is invalid';
    ELSIF p_threshold_days < 0 OR p_threshold_days > 3650 THEN
        refresh_reason := 'INVALID_ARGUMENT';
        message := 'p_threshold_days must be between 0 and 3650';
    ELSIF p_trigger IS NOT NULL AND p_trigger <> 'SERVICE' THEN
        refresh_reason := 'INVALID_ARGUMENT';
        message := 'p_trigger must be NULL or SERVICE';
    ELSIF pg_catalog.current_setting('transaction_read_only')::boolean THEN
        refresh_reason := 'REFRESH_DEFERRED_READ_ONLY';
        message := 'Refresh needs a read-write transaction on the primary';
    ELSIF pg_catalog.current_setting('transaction_isolation') = 'serializable' THEN
        refresh_reason := 'REFRESH_DEFERRED_SNAPSHOT';
        message := 'Refresh writes nothing inside a SERIALIZABLE transaction; call it in a transaction of its own';
    ELSE
        -- In REPEATABLE READ, a token row changed since the snapshot (a concurrent refresh
        -- rotated it) cannot be locked: the answer is deferred, never an error.
        BEGIN
            v_refresh := auth._refresh_token(
                p_token,
                pg_catalog.make_interval(days => p_threshold_days),
                coalesce(p_force, FALSE),
                coalesce(p_trigger, CASE WHEN p_force THEN 'FORCED' ELSE 'ON_DEMAND' END),
                -- In a definer-rights function current_user is the owner; the login is session_user.
                p_force_limited => NOT pg_catalog.pg_has_role(SESSION_USER, auth._role('admin'), 'USAGE')
            );
        EXCEPTION WHEN serialization_failure THEN
            v_deferred := TRUE;
        END;
        IF v_deferred THEN
            refresh_reason := 'REFRESH_DEFERRED_SNAPSHOT';
            message := 'The token changed since this transaction''s snapshot; retry in a new transaction';
            RETURN NEXT;
            RETURN;
        END IF;
        success := v_refresh.o_success;
        new_token := v_refresh.o_new_token;
        expires_at := v_refresh.o_expires_at;
        refresh_reason := v_refresh.o_refresh_reason;
        message := v_refresh.o_message;
    END IF;
    RETURN NEXT;
END;
$$;
COMMENT ON FUNCTION auth.refresh_production_token_enhanced(text, integer, boolean, text) IS
'Refresh a token when it is within p_threshold_days of expiry (NULL: the policy '
'threshold) or when p_force. p_trigger SERVICE marks calls of the refresher. ROTATE '
'policies return a new token; EXTEND policies a later expires_at and no new token.';
REVOKE ALL ON FUNCTION auth.refresh_production_token_enhanced(text, integer, boolean, text) FROM public;
GRANT EXECUTE ON FUNCTION auth.refresh_production_token_enhanced(text, integer, boolean, text)
TO pyvault_api, pyvault_refresher, pyvault_admin;
