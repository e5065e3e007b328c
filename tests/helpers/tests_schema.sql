-- Test helpers: only test databases get the tests schema.
CREATE SCHEMA IF NOT EXISTS tests;

-- Issue a token for tenant/user names (registered on the fly); returns the plaintext.
CREATE OR REPLACE FUNCTION tests.make_token(
    p_expires_in interval DEFAULT '30 days',
    p_token_type text DEFAULT 'PRODUCTION',
    p_scope text[] DEFAULT '{api:read}',
    p_tenant text DEFAULT 'acme',
    p_user text DEFAULT 'alice'
) RETURNS text
LANGUAGE plpgsql
AS $$
DECLARE
    v_tenant bytea := auth.register_tenant(p_tenant);
    v_user bytea := auth.register_user(v_tenant, p_user);
BEGIN
    RETURN (SELECT g.token FROM auth.generate_production_api_token(
        v_user, v_tenant, p_scope, p_token_type, p_expires_in) AS g);
END;
$$;

-- The bridge row of a token.
CREATE OR REPLACE FUNCTION tests.bridge(p_token text) RETURNS auth.api_token_bridge
LANGUAGE sql
AS $$
    SELECT b.* FROM auth.api_token_bridge AS b
    WHERE b.token_hash = sha256(convert_to(p_token, 'UTF8'))
$$;

-- Make time pass for every token: shift all stored times back by p_by. Inside one
-- transaction now() stands still, so tests move the data instead of the clock.
CREATE OR REPLACE FUNCTION tests.advance_clock(p_by interval) RETURNS void
LANGUAGE sql
AS $$
    UPDATE auth.api_token_bridge SET
        issued_at = issued_at - p_by,
        expires_at = expires_at - p_by,
        valid_until = valid_until - p_by,
        refresh_after = refresh_after - p_by,
        record_use_after = record_use_after - p_by,
        last_used_at = last_used_at - p_by,
        family_started_at = family_started_at - p_by;
    UPDATE auth.api_token_s SET expires_at = expires_at - p_by WHERE load_end_date IS NULL;
    UPDATE auth.api_token_usage SET
        first_used_at = first_used_at - p_by,
        last_used_at = last_used_at - p_by;
$$;

-- Every table of ours (the auth schema's), by name: what the whole-database checks walk.
CREATE OR REPLACE FUNCTION tests.our_tables() RETURNS TABLE (name text)
LANGUAGE sql
AS $$
    SELECT c.relname::text FROM pg_class AS c
    WHERE c.relnamespace = 'auth'::regnamespace AND c.relkind = 'r'
    ORDER BY c.relname
$$;

-- Counts of rows in every table of ours, for "nothing was written" checks.
CREATE OR REPLACE FUNCTION tests.row_counts() RETURNS jsonb
LANGUAGE plpgsql
AS $$
DECLARE
    v_result jsonb := '{}';
    v_table text;
    v_count bigint;
BEGIN
    FOR v_table IN
        SELECT t.name FROM tests.our_tables() AS t
    LOOP
        EXECUTE format('SELECT count(*) FROM auth.%I', v_table) INTO v_count;
        v_result := v_result || jsonb_build_object(v_table, v_count);
    END LOOP;
    RETURN v_result;
END;
$$;

-- A digest of the full contents of every table of ours, for "nothing changed" checks.
CREATE OR REPLACE FUNCTION tests.snapshot() RETURNS text
LANGUAGE plpgsql
AS $$
DECLARE
    v_result text := '';
    v_table text;
    v_digest text;
BEGIN
    FOR v_table IN
        SELECT t.name FROM tests.our_tables() AS t
    LOOP
        EXECUTE format(
            'SELECT md5(coalesce(string_agg(t::text, %L ORDER BY t::text), %L)) FROM auth.%I AS t',
            E'\n', '', v_table) INTO v_digest;
        v_result := v_result || v_table || ':' || v_digest || ' ';
    END LOOP;
    RETURN v_result;
END;
$$;

-- The text of every row of every table of ours, for "no secret is stored" checks.
CREATE OR REPLACE FUNCTION tests.table_dump() RETURNS TABLE (table_name text, content text)
LANGUAGE plpgsql
AS $$
DECLARE
    v_table text;
BEGIN
    FOR v_table IN
        SELECT t.name FROM tests.our_tables() AS t
    LOOP
        table_name := v_table;
        EXECUTE format('SELECT coalesce(string_agg(t::text, E''\n''), '''') FROM auth.%I AS t', v_table)
        INTO content;
        RETURN NEXT;
    END LOOP;
END;
$$;

-- Bulk-create tokens without keeping their secrets (for batch tests), through
-- auth._issue_token itself: the rows a token is issued with are defined once.
CREATE OR REPLACE FUNCTION tests.bulk_tokens(
    p_count integer,
    p_token_type text,
    p_expires_in interval,
    p_user text DEFAULT 'bulk'
) RETURNS integer
LANGUAGE plpgsql
AS $$
DECLARE
    v_tenant bytea := auth.register_tenant('bulk');
    v_user bytea := auth.register_user(v_tenant, p_user);
BEGIN
    FOR i IN 1..p_count LOOP
        PERFORM auth._issue_token(v_user, v_tenant, '{api:read}', p_token_type,
                                  now() + p_expires_in, 'tests:bulk');
    END LOOP;
    RETURN p_count;
END;
$$;

-- Every token whose bridge row and current satellite row disagree (should be none).
CREATE OR REPLACE FUNCTION tests.inconsistent_tokens() RETURNS bigint
LANGUAGE sql
AS $$
    SELECT count(*)
    FROM auth.api_token_bridge AS b
    LEFT JOIN auth.api_token_s AS s ON s.api_token_hk = b.api_token_hk AND s.load_end_date IS NULL
    WHERE s.api_token_hk IS NULL OR s.expires_at <> b.expires_at OR s.is_revoked <> b.is_revoked
       OR s.token_hash <> b.token_hash
       OR (b.successor_hk IS NOT NULL AND NOT EXISTS (
           SELECT FROM auth.token_rotation_l AS l
           WHERE l.predecessor_hk = b.api_token_hk AND l.successor_hk = b.successor_hk))
$$;
