-- When a use of a token should refresh it: the policy threshold before expiry, or
-- never ('infinity') when the family's maximum lifetime leaves nothing to extend to.
-- PL/pgSQL, not SQL: a SQL function with a FROM clause is never inlined, and it is parsed
-- and planned again on every call from a cached plan (measured: 93 us per rotation);
-- PL/pgSQL keeps its plan for the session.
CREATE OR REPLACE FUNCTION auth._refresh_after(
    p_token_type text,
    p_expires_at timestamptz,
    p_family_started_at timestamptz
) RETURNS timestamptz
LANGUAGE plpgsql
STABLE
AS $$
BEGIN
    RETURN (
        SELECT auth._refresh_point(p_expires_at, p_family_started_at, p.max_lifetime,
                                   p.refresh_threshold)
        FROM auth.token_refresh_policy AS p
        WHERE p.token_type = p_token_type
    );
END;
$$;
REVOKE ALL ON FUNCTION auth._refresh_after(text, timestamptz, timestamptz) FROM public;
