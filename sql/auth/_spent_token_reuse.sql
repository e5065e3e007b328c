-- A token that is not in the bridge may be a spent one: rotated, its grace over, and
-- moved out of the bridge by auth.prune_token_history. While its family lives,
-- presenting it is reuse, handled as for a rotated token still in the bridge (revoke the
-- family by policy, record a security event). Returns whether it was reuse. Only the
-- miss path of a lookup calls it, so valid tokens pay nothing for it. A spent token's
-- identity went with its vault rows: the event names its family (api_token_hk NULL).
CREATE OR REPLACE FUNCTION auth._spent_token_reuse(
    p_token_hash bytea,
    p_source text
) RETURNS boolean
LANGUAGE plpgsql
AS $$
DECLARE
    v_spent auth.spent_token;
    v_live record;
BEGIN
    SELECT s.* INTO v_spent FROM auth.spent_token AS s
    WHERE s.token_key = auth._hash_key(p_token_hash);
    IF NOT FOUND THEN
        RETURN FALSE;
    END IF;
    SELECT b.tenant_hk, b.token_type INTO v_live
    FROM auth.api_token_bridge AS b
    WHERE b.family_hk = v_spent.family_hk AND NOT b.is_revoked
      AND b.valid_until > pg_catalog.now()
    LIMIT 1;
    IF NOT FOUND THEN
        RETURN FALSE;  -- the family is dead (expired or revoked): an invalid token, no more
    END IF;
    PERFORM auth._handle_token_reuse(
        NULL, v_spent.family_hk, v_live.tenant_hk, v_live.token_type, p_source
    );
    RETURN TRUE;
END;
$$;
REVOKE ALL ON FUNCTION auth._spent_token_reuse(bytea, text) FROM public;
