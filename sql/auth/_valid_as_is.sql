-- Whether a bridge row answers "valid" for a scope with nothing to write: not revoked,
-- inside its validity, holding the scope, and no use due for recording (or a read-only
-- transaction, which records none). The one rule of the validators' fast path: when it
-- holds, the answer comes from the row alone. SQL, no SET, so the callers' statement
-- inlines it (EXPLAIN VERBOSE shows its body, the row's fields as plain columns).
CREATE OR REPLACE FUNCTION auth._valid_as_is(
    p_token auth.api_token_bridge,
    p_required_scope text
) RETURNS boolean
LANGUAGE sql
STABLE
PARALLEL SAFE
AS $$
    SELECT NOT p_token.is_revoked AND pg_catalog.now() < p_token.valid_until
       AND p_required_scope = ANY(p_token.scope)
       AND (pg_catalog.now() < p_token.record_use_after
            OR pg_catalog.current_setting('transaction_read_only')::boolean)
$$;
REVOKE ALL ON FUNCTION auth._valid_as_is(auth.api_token_bridge, text) FROM public;
