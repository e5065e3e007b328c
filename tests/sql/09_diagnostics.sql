-- test_token_refresh_system: the seed call works, is non-destructive by default, never
-- prints a whole token, and really refreshes with p_apply.
BEGIN;
SELECT plan(9);

CREATE TEMP TABLE t AS SELECT tests.make_token('3 days') AS token, tests.make_token('30 days') AS other;
CREATE TEMP TABLE before AS SELECT tests.snapshot() AS s;
CREATE TEMP TABLE d AS SELECT r.* FROM t, auth.test_token_refresh_system(t.token) AS r;

SELECT results_eq(
    $$ SELECT step FROM d $$,
    $$ VALUES ('FORMAT'), ('LOOKUP'), ('VALIDATION'), ('REFRESH_STATUS'), ('POLICY'), ('LINEAGE'),
              ('REFRESH_DRY_RUN'), ('SCHEDULE'), ('SECURITY') $$,
    'the seed call returns every step in order'
);
SELECT is(tests.snapshot(), (SELECT s FROM before), 'the dry run left every table unchanged');
SELECT is(
    (SELECT count(*)::int FROM d WHERE result LIKE 'FAIL%'), 0, 'a healthy token has no FAIL step'
);
SELECT results_eq(
    $$ SELECT (details ->> 'would_succeed')::boolean, details ->> 'refresh_reason' FROM d
       WHERE step = 'REFRESH_DRY_RUN' $$,
    $$ VALUES (true, 'FORCED') $$,
    'the dry run reports what a refresh would do'
);
SELECT is(
    (SELECT count(*)::int FROM d, t
     WHERE d.details::text LIKE '%' || substr(t.token, 10) || '%'
        OR d.result LIKE '%' || substr(t.token, 10) || '%'
        OR d.details::text ~ '[0-9a-f]{64}'),
    0, 'no step shows a whole token or a full hash'
);
SELECT is(
    (SELECT result FROM d WHERE step = 'SECURITY'), 'OK', 'the security step finds nothing wrong'
);

CREATE TEMP TABLE applied AS
SELECT r.* FROM t, auth.test_token_refresh_system(t.token, p_apply => TRUE) AS r;
SELECT ok((SELECT (tests.bridge(t.token)).successor_hk IS NOT NULL FROM t), 'p_apply really refreshes');
SELECT results_eq(
    $$ SELECT refresh_trigger, outcome FROM auth.token_refresh_event $$,
    $$ VALUES ('DIAGNOSTIC', 'ROTATED') $$,
    'the applied refresh is recorded with the DIAGNOSTIC trigger'
);
SELECT results_eq(
    $$ SELECT v.refresh_reason::text FROM t, auth.validate_and_refresh_api_token(t.token) AS v $$,
    $$ VALUES ('ALREADY_REFRESHED') $$,
    'the holder then receives the successor'
);

SELECT * FROM finish();
ROLLBACK;
