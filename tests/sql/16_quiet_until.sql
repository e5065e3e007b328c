-- quiet_until (migration 0016): the validators answer from one statement exactly while
-- a token has nothing to record, refresh or hand out, and the full path answers the
-- rest. Calls of the full-path functions are counted in pg_stat_xact_user_functions.
BEGIN;
SELECT plan(18);

SET LOCAL track_functions = 'pl';
CREATE TEMP VIEW full_calls AS
SELECT
    coalesce(sum(f.calls) FILTER (WHERE f.funcname = '_validate_and_refresh_in_full'), 0)::int
        AS refresh,
    coalesce(sum(f.calls) FILTER (WHERE f.funcname = '_validate_in_full'), 0)::int AS validate
FROM pg_stat_xact_user_functions AS f
WHERE f.schemaname = 'auth';
CREATE TEMP TABLE t AS SELECT tests.make_token('30 days') AS token;

SELECT is(
    (SELECT (tests.bridge(t.token)).quiet_until FROM t), '-infinity'::timestamptz,
    'a new token is not quiet: its first use is due for recording'
);
SELECT results_eq(
    $$ SELECT v.is_valid, v.refresh_reason::text FROM t, auth.validate_and_refresh_api_token(t.token) AS v $$,
    $$ VALUES (true, 'NO_REFRESH_NEEDED') $$,
    'its first validation is valid'
);
SELECT is((SELECT refresh FROM full_calls), 1, 'and took the full path, which recorded the use');
SELECT is(
    (SELECT (tests.bridge(t.token)).quiet_until FROM t), now() + interval '1 minute',
    'then it is quiet until the usage debounce ends (before its refresh point and expiry)'
);
SELECT is(
    (SELECT count(*)::int FROM t, generate_series(1, 50) AS i,
         auth.validate_and_refresh_api_token(t.token) AS v
     WHERE v.is_valid AND v.refresh_reason = 'NO_REFRESH_NEEDED' AND v.message = 'Token is valid'
       AND v.new_token IS NULL AND NOT v.was_refreshed
       AND v.user_hk = (tests.bridge(t.token)).user_hk),
    50, '50 validations of the quiet token give the full answer'
);
SELECT is(
    (SELECT count(*)::int FROM t, generate_series(1, 50) AS i,
         auth.validate_production_api_token(t.token) AS v
     WHERE v.is_valid AND v.message = 'Token is valid'),
    50, 'and so do 50 validations without refresh'
);
SELECT results_eq(
    'SELECT refresh, validate FROM full_calls', $$ VALUES (1, 0) $$,
    'all 100 from one statement: no call of either full path'
);
SELECT results_eq(
    $$ SELECT v.* FROM t, auth.validate_and_refresh_api_token(t.token) AS v $$,
    $$ SELECT v.* FROM t, auth._validate_and_refresh_in_full(t.token, 'api:read') AS v $$,
    'the one statement answers what the full path answers'
);
SELECT results_eq(
    $$ SELECT v.* FROM t, auth.validate_production_api_token(t.token) AS v $$,
    $$ SELECT v.* FROM t, auth._validate_in_full(t.token, 'api:read') AS v $$,
    'so does the one statement of validate'
);

SELECT results_eq(
    $$ SELECT v.is_valid, v.refresh_reason::text FROM t, auth.validate_and_refresh_api_token(t.token, 'api:admin') AS v $$,
    $$ VALUES (false, 'INSUFFICIENT_SCOPE') $$,
    'a scope the token lacks goes to the full path, which refuses it'
);
SELECT is(
    (SELECT v.is_valid FROM t, auth.validate_and_refresh_api_token(
        'ovt_prod_' || upper(substr(t.token, 10))) AS v),
    FALSE, 'so does a string of the right length that is no token'
);

-- Due for refresh: the full path rotates; the predecessor keeps its successor, and the
-- successor's first use is pending: neither is quiet.
SELECT tests.advance_clock('25 days');
SELECT ok((SELECT (tests.bridge(t.token)).quiet_until < now() FROM t),
          'past its refresh point and its debounce a token is not quiet');
CREATE TEMP TABLE s AS
SELECT v.new_token AS token FROM t, auth.validate_and_refresh_api_token(t.token) AS v;
SELECT results_eq(
    $$ SELECT (tests.bridge(t.token)).quiet_until, (tests.bridge(s.token)).quiet_until FROM t, s $$,
    $$ VALUES ('-infinity'::timestamptz, '-infinity'::timestamptz) $$,
    'a rotated token (successor kept) and its unused successor are not quiet'
);
SELECT is(
    (SELECT v.refresh_reason::text FROM t, auth.validate_and_refresh_api_token(t.token) AS v),
    'ALREADY_REFRESHED', 'so the predecessor still hands out its successor'
);
SELECT is(
    (SELECT v.is_valid FROM s, auth.validate_and_refresh_api_token(s.token) AS v), TRUE,
    'the successor''s first use is recorded'
);
SELECT is((SELECT (tests.bridge(s.token)).quiet_until FROM s), now() + interval '1 minute',
          'after which the successor is quiet');

-- A pg_proc row over 2 kB gets compressed columns, and the argument types are read on
-- every call (1% of the PL/pgSQL floor to decompress): the validators' rows stay small.
SELECT is_empty(
    $$ SELECT p.proname FROM pg_proc AS p
       WHERE p.oid IN ('auth.validate_and_refresh_api_token(text, text)'::regprocedure,
                       'auth.validate_production_api_token(text, text)'::regprocedure)
         AND pg_column_size(p.*) > 1800 $$,
    'the validators'' catalog rows stay under the compression threshold'
);

SELECT auth.revoke_api_token(s.token) FROM s;
SELECT is((SELECT (tests.bridge(s.token)).quiet_until FROM s), '-infinity'::timestamptz,
          'a revoked token is never quiet');

SELECT * FROM finish();
ROLLBACK;
