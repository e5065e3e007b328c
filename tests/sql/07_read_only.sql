-- In a read-only transaction validation still answers and refresh is deferred.
BEGIN;
SELECT plan(6);

CREATE TEMP TABLE t AS SELECT tests.make_token('3 days') AS token, tests.make_token('30 days') AS far;
CREATE TEMP TABLE before AS SELECT tests.snapshot() AS s;
SET LOCAL transaction_read_only = on;

SELECT results_eq(
    $$ SELECT v.is_valid, v.was_refreshed, v.new_token IS NULL, v.refresh_reason::text
       FROM t, auth.validate_and_refresh_api_token(t.token) AS v $$,
    $$ VALUES (true, false, true, 'REFRESH_DEFERRED_READ_ONLY') $$,
    'a due token validates and its refresh is deferred'
);
SELECT results_eq(
    $$ SELECT v.is_valid, v.refresh_reason::text FROM t, auth.validate_and_refresh_api_token(t.far) AS v $$,
    $$ VALUES (true, 'NO_REFRESH_NEEDED') $$,
    'a token far from expiry validates as usual'
);
SELECT is((SELECT v.is_valid FROM t, auth.validate_production_api_token(t.token) AS v), TRUE,
          'validate_production_api_token works read-only');
SELECT results_eq(
    $$ SELECT r.success, r.refresh_reason::text FROM t, auth.refresh_production_token_enhanced(t.token) AS r $$,
    $$ VALUES (false, 'REFRESH_DEFERRED_READ_ONLY') $$,
    'an explicit refresh is deferred, not an error'
);
SELECT is((SELECT s.refresh_recommended FROM t, auth.get_token_refresh_status(t.token) AS s), TRUE,
          'status works read-only');
SELECT is(tests.snapshot(), (SELECT s FROM before), 'nothing was written');

SELECT * FROM finish();
ROLLBACK;
