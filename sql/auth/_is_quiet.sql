-- Whether a bridge row answers a validation for a scope from the row alone: valid, with
-- no use to record, no refresh due and no successor to hand out (quiet_until, migration
-- 0016, folds those conditions into one time). The one rule of both validators' one
-- statement for the common case. SQL, no SET, so the callers' statement inlines it
-- (EXPLAIN VERBOSE shows two plain comparisons). CURRENT_TIMESTAMP, SQL syntax that no
-- schema can shadow, is now() without a function call: on PostgreSQL 15 it saves the
-- call's set-up (an ACL check among it) in every call, 0.3% of the PL/pgSQL floor.
CREATE OR REPLACE FUNCTION auth._is_quiet(
    p_token auth.api_token_bridge,
    p_required_scope text
) RETURNS boolean
LANGUAGE sql
STABLE
PARALLEL SAFE
AS $$
    SELECT CURRENT_TIMESTAMP < p_token.quiet_until AND p_required_scope = ANY(p_token.scope)
$$;
REVOKE ALL ON FUNCTION auth._is_quiet(auth.api_token_bridge, text) FROM public;
