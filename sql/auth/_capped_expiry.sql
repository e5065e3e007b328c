-- The expiry a refresh gives a token: the policy's time to live from now, never past the
-- family's maximum lifetime, never earlier than the token's own expiry. The one formula
-- of rotation (auth._refresh_token) and extension (auth._extend_tokens). STABLE, as
-- timestamptz + interval is: a function marked stricter than its body is not inlined.
CREATE OR REPLACE FUNCTION auth._capped_expiry(
    p_now timestamptz,
    p_time_to_live interval,
    p_family_started_at timestamptz,
    p_max_lifetime interval,
    p_expires_at timestamptz
) RETURNS timestamptz
LANGUAGE sql
STABLE
PARALLEL SAFE
AS $$
    -- greatest and least are SQL syntax, not functions: nothing can shadow them.
    SELECT greatest(
        least(p_now + p_time_to_live, p_family_started_at + p_max_lifetime),
        p_expires_at)
$$;
REVOKE ALL ON FUNCTION auth._capped_expiry(timestamptz, interval, timestamptz, interval, timestamptz)
FROM public;
