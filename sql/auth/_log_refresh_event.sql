-- Append one refresh attempt to the refresh event log. PL/pgSQL, not SQL: it keeps its
-- plan for the session, where a non-inlinable SQL function is planned on every call.
CREATE OR REPLACE FUNCTION auth._log_refresh_event(
    p_token auth.api_token_bridge,
    p_trigger text,
    p_outcome text,
    p_reason text,
    p_successor_hk bytea DEFAULT NULL,
    p_new_expires_at timestamptz DEFAULT NULL,
    p_detail jsonb DEFAULT '{}'
) RETURNS void
LANGUAGE plpgsql
AS $$
BEGIN
    INSERT INTO auth.token_refresh_event (
        api_token_hk, tenant_hk, refresh_trigger, outcome, reason, successor_hk,
        old_expires_at, new_expires_at, detail
    ) VALUES (
        p_token.api_token_hk, p_token.tenant_hk, p_trigger, p_outcome, p_reason, p_successor_hk,
        p_token.expires_at, p_new_expires_at, p_detail
    );
END;
$$;
REVOKE ALL ON FUNCTION auth._log_refresh_event(
    auth.api_token_bridge, text, text, text, bytea, timestamptz, jsonb
) FROM public;
