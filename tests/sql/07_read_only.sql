-- In a read-only transaction validation still answers and refresh is deferred.
BEGIN;
SELECT plan(9);

CREATE TEMP TABLE t AS SELECT tests.make_token('3 days') AS token, tests.make_token('30 days') AS far;
-- A successor nobody has used yet, and one whose first use is recorded.
CREATE TEMP TABLE s AS
SELECT (auth.refresh_production_token_enhanced(tests.make_token('30 days'), p_force => TRUE)).new_token AS fresh,
       (auth.refresh_production_token_enhanced(tests.make_token('30 days', p_user => 'bob'), p_force => TRUE)).new_token AS used;
SELECT auth.validate_and_refresh_api_token(s.used) FROM s;
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
SELECT results_eq(
    $$ SELECT v.is_valid, v.new_token IS NULL, v.refresh_reason::text FROM s, auth.validate_and_refresh_api_token(s.fresh) AS v $$,
    $$ VALUES (true, true, 'REFRESH_DEFERRED_READ_ONLY') $$,
    'the first use of a successor is deferred to the primary: it starts the predecessor''s grace'
);
SELECT results_eq(
    $$ SELECT v.is_valid, v.refresh_reason::text FROM s, auth.validate_and_refresh_api_token(s.used) AS v $$,
    $$ VALUES (true, 'NO_REFRESH_NEEDED') $$,
    'a successor whose first use is recorded validates as usual'
);
SELECT is((SELECT v.is_valid FROM s, auth.validate_production_api_token(s.fresh) AS v), TRUE,
          'validate_production_api_token accepts an unused successor read-only');
SELECT is(tests.snapshot(), (SELECT s FROM before), 'nothing was written');

SELECT * FROM finish();
ROLLBACK;
