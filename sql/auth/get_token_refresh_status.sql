-- Report where a token stands: valid or not, time left, and whether (and why) a
-- refresh is recommended now. Read-only: writes nothing, not even usage.
CREATE OR REPLACE FUNCTION auth.get_token_refresh_status(p_token text)
RETURNS TABLE (
    is_valid boolean,
    expires_at timestamptz,
    time_until_expiry interval,
    refresh_recommended boolean,
    recommendation_reason text,
    refresh_reason varchar(100),
    token_type text,
    strategy text,
    refresh_threshold interval,
    refresh_after timestamptz,
    valid_until timestamptz,
    has_successor boolean,
    generation integer,
    last_used_at timestamptz,
    message text
)
LANGUAGE plpgsql
STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_now timestamptz := pg_catalog.now();
    v_token auth.api_token_bridge;
    v_policy auth.token_refresh_policy;
BEGIN
    is_valid := FALSE;
    refresh_recommended := FALSE;
    refresh_reason := 'TOKEN_INVALID';
    IF NOT auth._is_token_shaped(p_token) THEN
        message := 'Token format is invalid';
        recommendation_reason := 'Not a pyvault token';
        RETURN NEXT;
        RETURN;
    END IF;
    SELECT b.* INTO v_token
    FROM auth.api_token_bridge AS b
    WHERE b.token_hash = pg_catalog.sha256(pg_catalog.convert_to(p_token, 'UTF8'));
    IF NOT FOUND THEN
        message := 'Token not found';
        recommendation_reason := 'Unknown token: issue a new one';
        RETURN NEXT;
        RETURN;
    END IF;
    SELECT p.* INTO STRICT v_policy
    FROM auth.token_refresh_policy AS p
    WHERE p.token_type = v_token.token_type;

    expires_at := v_token.expires_at;
    token_type := v_token.token_type;
    strategy := v_policy.strategy;
    refresh_threshold := v_policy.refresh_threshold;
    refresh_after := nullif(v_token.refresh_after, 'infinity');  -- NULL: no refresh point
    valid_until := v_token.valid_until;
    has_successor := v_token.successor_hk IS NOT NULL;
    generation := v_token.generation;
    last_used_at := v_token.last_used_at;

    IF v_token.is_revoked THEN
        message := 'Token has been revoked';
        recommendation_reason := 'Revoked tokens cannot be refreshed: issue a new one';
    ELSIF v_now >= v_token.valid_until THEN
        IF v_token.successor_hk IS NOT NULL AND v_token.valid_until < v_token.expires_at THEN
            refresh_reason := 'REUSE_DETECTED';
            message := 'Token was rotated and its grace window has ended';
            recommendation_reason := 'Use the successor token; presenting this one again is reuse';
        ELSE
            message := 'Token has expired';
            recommendation_reason := 'Expired tokens cannot be refreshed: issue a new one';
        END IF;
    ELSE
        is_valid := TRUE;
        time_until_expiry := v_token.expires_at - v_now;
        message := 'Token is valid';
        IF v_token.successor_hk IS NOT NULL THEN
            refresh_recommended := TRUE;
            refresh_reason := 'ALREADY_REFRESHED';
            recommendation_reason := 'A successor exists: refresh to receive it and switch';
        ELSIF v_token.refresh_after = 'infinity' THEN
            refresh_reason := 'MAX_LIFETIME_REACHED';
            recommendation_reason := 'The family reached its maximum lifetime: issue a new token before '
                || v_token.expires_at::text;
        ELSIF v_now >= v_token.expires_at - v_policy.refresh_threshold THEN
            refresh_recommended := TRUE;
            refresh_reason := 'EXPIRING_SOON';
            recommendation_reason := 'Expires within the refresh threshold of '
                || v_policy.refresh_threshold::text;
        ELSIF v_now >= v_token.refresh_after THEN
            refresh_recommended := TRUE;
            refresh_reason := 'PREDICTED_IDLE';
            recommendation_reason := 'Usage history says the next use will come after expiry';
        ELSE
            refresh_reason := 'NO_REFRESH_NEEDED';
            recommendation_reason := 'Refresh due after ' || v_token.refresh_after::text;
        END IF;
    END IF;
    RETURN NEXT;
END;
$$;
COMMENT ON FUNCTION auth.get_token_refresh_status(text) IS
'Where a token stands: validity, exact time until expiry (an interval, never truncated), '
'whether a refresh is recommended and why (refresh_reason is a reason code).';
REVOKE ALL ON FUNCTION auth.get_token_refresh_status(text) FROM public;
GRANT EXECUTE ON FUNCTION auth.get_token_refresh_status(text)
TO pyvault_api, pyvault_refresher, pyvault_admin;
