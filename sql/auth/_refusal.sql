-- Why a token that a lookup found unusable is refused: not in the bridge (and perhaps a
-- spent token of a live family: reuse), revoked, or dead (a rotated token past its grace
-- is reuse, handled by auth._handle_token_reuse; otherwise it expired). The one
-- definition of the refusal answers for validation, validate-and-refresh and refresh.
-- p_row is the bridge row the caller found (all NULL when it found none). Called only
-- on the refusal path, so valid tokens pay nothing for it.
CREATE OR REPLACE FUNCTION auth._refusal(
    p_token text,
    p_row auth.api_token_bridge,
    p_source text,
    OUT o_reason varchar(100),
    OUT o_message text
)
LANGUAGE plpgsql
AS $$
BEGIN
    o_reason := 'TOKEN_INVALID';
    IF p_row.token_hash IS NULL THEN
        IF auth._spent_token_reuse(pg_catalog.sha256(pg_catalog.convert_to(p_token, 'UTF8')),
                                   p_source) THEN
            o_reason := 'REUSE_DETECTED';
            o_message := 'Token was rotated and its grace window has ended';
        ELSE
            o_message := 'Token not found';
        END IF;
    ELSIF p_row.is_revoked THEN
        o_message := 'Token has been revoked';
    ELSIF p_row.successor_hk IS NOT NULL AND p_row.valid_until < p_row.expires_at THEN
        PERFORM auth._handle_token_reuse(
            p_row.api_token_hk, p_row.family_hk, p_row.tenant_hk, p_row.token_type, p_source
        );
        o_reason := 'REUSE_DETECTED';
        o_message := 'Token was rotated and its grace window has ended';
    ELSE
        o_message := 'Token has expired';
    END IF;
END;
$$;
REVOKE ALL ON FUNCTION auth._refusal(text, auth.api_token_bridge, text) FROM public;
