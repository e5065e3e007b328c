-- When a use should refresh a token that expires at p_expires_at: the policy threshold
-- before, or never ('infinity') when the family's maximum lifetime leaves nothing to
-- extend to. The one formula of auth._refresh_after and auth._extend_tokens.
CREATE OR REPLACE FUNCTION auth._refresh_point(
    p_expires_at timestamptz,
    p_family_started_at timestamptz,
    p_max_lifetime interval,
    p_refresh_threshold interval
) RETURNS timestamptz
LANGUAGE sql
STABLE
PARALLEL SAFE
AS $$
    SELECT CASE
        WHEN p_family_started_at + p_max_lifetime <= p_expires_at THEN 'infinity'::timestamptz
        ELSE p_expires_at - p_refresh_threshold
    END
$$;
REVOKE ALL ON FUNCTION auth._refresh_point(timestamptz, timestamptz, interval, interval) FROM public;
