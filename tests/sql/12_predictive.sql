-- Predictive refresh: a token whose usual gap between uses says its next use comes
-- after expiry is refreshed at its current use (PREDICTED_IDLE).
BEGIN;
SELECT plan(9);

-- Used every 10 days; after three uses it has 9 days left.
CREATE TEMP TABLE t AS SELECT tests.make_token('29 days', 'PRODUCTION', '{api:read}', 'acme', 'ten') AS every10,
    tests.make_token('29 days', 'PRODUCTION', '{api:read}', 'acme', 'once') AS thin;

SELECT auth.validate_production_api_token(every10) FROM t;
SELECT auth.validate_production_api_token(thin) FROM t;
SELECT tests.advance_clock('10 days');
SELECT auth.validate_production_api_token(every10) FROM t;
SELECT auth.validate_production_api_token(thin) FROM t;
SELECT results_eq(
    $$ SELECT s.refresh_recommended, s.refresh_reason::text FROM t, auth.get_token_refresh_status(t.thin) AS s $$,
    $$ VALUES (false, 'NO_REFRESH_NEEDED') $$,
    'one gap is too little history: no prediction (19 days left, used every 10 days)'
);
SELECT results_eq(
    $$ SELECT s.refresh_recommended, s.refresh_reason::text FROM t, auth.get_token_refresh_status(t.every10) AS s $$,
    $$ VALUES (false, 'NO_REFRESH_NEEDED') $$,
    'before its third use nothing is predicted'
);
SELECT tests.advance_clock('10 days');
SELECT results_eq(
    $$ SELECT v.was_refreshed, v.refresh_reason::text FROM t, auth.validate_and_refresh_api_token(t.every10) AS v $$,
    $$ VALUES (true, 'PREDICTED_IDLE') $$,
    'used every 10 days with 9 days left: refreshed at this use'
);
SELECT results_eq(
    $$ SELECT refresh_trigger, outcome, reason::text FROM auth.token_refresh_event $$,
    $$ VALUES ('ON_DEMAND', 'ROTATED', 'PREDICTED_IDLE') $$,
    'the refresh is recorded as PREDICTED_IDLE'
);
SELECT results_eq(
    $$ SELECT u.gap_count, u.mean_gap_seconds FROM t, auth.api_token_usage AS u
       WHERE u.api_token_hk = (tests.bridge(t.every10)).api_token_hk $$,
    $$ VALUES (2, 864000::double precision) $$,
    'the estimator saw two gaps of 10 days'
);

-- The same history, seen through status: a third use recorded by plain validation.
SELECT results_eq(
    $$ SELECT s.refresh_recommended, s.refresh_reason::text FROM t, auth.get_token_refresh_status(t.thin) AS s $$,
    $$ VALUES (false, 'NO_REFRESH_NEEDED') $$,
    'with 9 days left and one gap, still no prediction'
);
SELECT auth.validate_production_api_token(thin) FROM t;
SELECT results_eq(
    $$ SELECT s.refresh_recommended, s.refresh_reason::text FROM t, auth.get_token_refresh_status(t.thin) AS s $$,
    $$ VALUES (true, 'PREDICTED_IDLE') $$,
    'after a third use, status recommends refreshing (PREDICTED_IDLE)'
);

-- Used hourly with 9 days left: no prediction.
CREATE TEMP TABLE h AS SELECT tests.make_token('9 days 2 hours', 'PRODUCTION', '{api:read}', 'acme', 'hourly') AS hourly;
SELECT auth.validate_production_api_token(hourly) FROM h;
SELECT tests.advance_clock('1 hour');
SELECT auth.validate_production_api_token(hourly) FROM h;
SELECT tests.advance_clock('1 hour');
SELECT results_eq(
    $$ SELECT v.was_refreshed, v.refresh_reason::text FROM h, auth.validate_and_refresh_api_token(h.hourly) AS v $$,
    $$ VALUES (false, 'NO_REFRESH_NEEDED') $$,
    'used hourly with 9 days left: not refreshed'
);

-- The batch job takes predicted tokens too.
CREATE TEMP TABLE batch AS SELECT * FROM auth.refresh_expiring_tokens_batch();
SELECT results_eq(
    $$ SELECT (b.details -> 'counts' ->> 'enqueued')::int, o.reason::text
       FROM batch AS b, auth.token_refresh_outbox AS o $$,
    $$ VALUES (1, 'PREDICTED_IDLE') $$,
    'the batch enqueues the predicted token with reason PREDICTED_IDLE'
);

SELECT * FROM finish();
ROLLBACK;
