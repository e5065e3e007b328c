-- Every public function answers bad input with a clear result, never an exception,
-- and writes nothing.
BEGIN;
SELECT plan(15);

CREATE TEMP TABLE good AS SELECT tests.make_token('3 days') AS token;

CREATE TEMP TABLE bad (label text, token text);
INSERT INTO bad
SELECT 'NULL', NULL
UNION ALL SELECT 'empty', ''
UNION ALL SELECT 'wrong prefix', 'ovt_test_' || repeat('a', 64)
UNION ALL SELECT 'too short', 'ovt_prod_' || repeat('a', 63)
UNION ALL SELECT 'too long', 'ovt_prod_' || repeat('a', 65)
UNION ALL SELECT 'upper-case hex', (SELECT 'ovt_prod_' || upper(substr(token, 10)) FROM good)
UNION ALL SELECT 'non-hex', 'ovt_prod_' || repeat('g', 64)
UNION ALL SELECT 'leading space', (SELECT ' ' || left(token, 72) FROM good)
UNION ALL SELECT 'trailing newline', (SELECT token || E'\n' FROM good)
UNION ALL SELECT 'whitespace', repeat(' ', 73)
UNION ALL SELECT 'a megabyte', 'ovt_prod_' || repeat('a', 1024 * 1024)
UNION ALL SELECT 'sql metacharacters', 'ovt_prod_'';DROP TABLE auth.api_token_s;--' || repeat('a', 30)
UNION ALL SELECT 'sql metacharacters, right length', left('ovt_prod_'' OR ''1''=''1'' --' || repeat('a', 64), 73)
UNION ALL SELECT 'multibyte, 73 bytes', 'ovt_prod_' || repeat('é', 32)
UNION ALL SELECT 'nul-free control chars', 'ovt_prod_' || repeat(E'\t', 64);

CREATE TEMP TABLE before AS SELECT tests.snapshot() AS s;

SELECT is(
    (SELECT count(*)::int FROM bad AS b, auth.validate_production_api_token(b.token) AS v
     WHERE v.is_valid IS DISTINCT FROM FALSE OR v.message IS NULL),
    0, 'validate_production_api_token: every bad input is invalid with a message'
);
SELECT is(
    (SELECT count(*)::int FROM bad AS b, auth.validate_and_refresh_api_token(b.token) AS v
     WHERE v.is_valid IS DISTINCT FROM FALSE OR v.was_refreshed OR v.new_token IS NOT NULL
        OR v.refresh_reason <> 'TOKEN_INVALID' OR v.message IS NULL),
    0, 'validate_and_refresh_api_token: every bad input is TOKEN_INVALID with a message'
);
SELECT is(
    (SELECT count(*)::int FROM bad AS b, auth.refresh_production_token_enhanced(b.token, 7, TRUE) AS r
     WHERE r.success IS DISTINCT FROM FALSE OR r.new_token IS NOT NULL
        OR r.refresh_reason <> 'TOKEN_INVALID' OR r.message IS NULL),
    0, 'refresh_production_token_enhanced: every bad input fails with TOKEN_INVALID'
);
SELECT is(
    (SELECT count(*)::int FROM bad AS b, auth.get_token_refresh_status(b.token) AS s
     WHERE s.is_valid IS DISTINCT FROM FALSE OR s.refresh_recommended OR s.message IS NULL),
    0, 'get_token_refresh_status: every bad input is invalid, nothing recommended'
);
SELECT is(
    (SELECT count(*)::int FROM bad AS b WHERE auth.revoke_api_token(b.token) IS DISTINCT FROM FALSE),
    0, 'revoke_api_token: every bad input returns false'
);
SELECT is(
    (SELECT count(*)::int FROM bad AS b, auth.test_token_refresh_system(b.token) AS d
     WHERE d.result NOT LIKE 'FAIL:%'),
    0, 'test_token_refresh_system: every bad input stops at a FAIL step'
);
SELECT is(
    (SELECT count(*)::int FROM bad AS b, auth.test_token_refresh_system(b.token) AS d
     WHERE d.details::text LIKE '%' || substr((SELECT g.token FROM good AS g), 10, 20) || '%'),
    0, 'diagnostics of bad input never echo the token body'
);

SELECT is(tests.snapshot(), (SELECT s FROM before), 'bad tokens wrote nothing to any table');

-- Bad scopes and arguments next to a good token.
SELECT results_eq(
    $$ SELECT v.is_valid, v.message FROM good, auth.validate_production_api_token(good.token, NULL) AS v $$,
    $$ VALUES (false, 'Required scope is missing'::text) $$,
    'a NULL required scope is refused, not treated as no scope'
);
SELECT is(
    (SELECT count(*)::int FROM good,
        unnest(ARRAY['', ' api:read', 'API:READ', repeat('x', 1024 * 1024), 'api:read'' OR 1=1']) AS s (v),
        auth.validate_and_refresh_api_token(good.token, s.v) AS r
     WHERE r.is_valid OR r.refresh_reason <> 'INSUFFICIENT_SCOPE'),
    0, 'odd scopes are INSUFFICIENT_SCOPE and nothing is refreshed'
);
SELECT results_eq(
    $$ SELECT r.success, r.refresh_reason::text FROM good,
           unnest(ARRAY[-1, 3651, -2147483648]) AS d (v),
           auth.refresh_production_token_enhanced(good.token, d.v) AS r $$,
    $$ VALUES (false, 'INVALID_ARGUMENT'), (false, 'INVALID_ARGUMENT'), (false, 'INVALID_ARGUMENT') $$,
    'out-of-range thresholds are INVALID_ARGUMENT'
);
SELECT is(tests.snapshot(), (SELECT s FROM before), 'bad scopes and thresholds wrote nothing');
SELECT is(
    (SELECT count(*)::int FROM good, auth.refresh_production_token_enhanced(good.token, 7, NULL) AS r
     WHERE r.refresh_reason = 'EXPIRING_SOON'),
    1, 'a NULL p_force counts as false'
);
-- That refresh wrote (it was a real one); bad input before it wrote nothing.
SELECT is(
    (SELECT count(*)::int FROM auth.token_refresh_event WHERE reason <> 'EXPIRING_SOON'),
    0, 'bad input recorded no refresh event'
);
SELECT isnt((SELECT s FROM before), tests.snapshot(), 'the snapshot check sees real writes');

SELECT * FROM finish();
ROLLBACK;
