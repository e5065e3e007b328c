-- Usage is written at most once per token per debounce interval.
BEGIN;
SELECT plan(6);

CREATE TEMP TABLE t AS SELECT tests.make_token('30 days') AS token;
CREATE TEMP TABLE s0 AS
SELECT n_tup_upd, n_tup_ins FROM pg_stat_xact_user_tables WHERE relid = 'auth.api_token_bridge'::regclass;
CREATE TEMP TABLE u0 AS
SELECT n_tup_upd, n_tup_ins FROM pg_stat_xact_user_tables WHERE relid = 'auth.api_token_usage'::regclass;

SELECT is(
    (SELECT count(*)::int FROM t, generate_series(1, 100) AS i,
         auth.validate_and_refresh_api_token(t.token) AS v WHERE v.is_valid),
    100, '100 validations within a minute are all valid'
);
SELECT is(
    (SELECT u.use_count FROM auth.api_token_usage AS u, t
     WHERE u.api_token_hk = (tests.bridge(t.token)).api_token_hk),
    1::bigint, 'they recorded one use'
);
SELECT is(
    (SELECT s.n_tup_upd - s0.n_tup_upd FROM pg_stat_xact_user_tables AS s, s0
     WHERE s.relid = 'auth.api_token_bridge'::regclass),
    1::bigint, 'the bridge row was updated once'
);
SELECT is(
    (SELECT (s.n_tup_upd - u0.n_tup_upd) + (s.n_tup_ins - u0.n_tup_ins) FROM pg_stat_xact_user_tables AS s, u0
     WHERE s.relid = 'auth.api_token_usage'::regclass),
    1::bigint, 'the usage table was written once'
);

SELECT tests.advance_clock('10 minutes');
SELECT auth.validate_production_api_token(token) FROM t;
SELECT results_eq(
    $$ SELECT u.use_count, u.gap_count, u.mean_gap_seconds FROM auth.api_token_usage AS u, t
       WHERE u.api_token_hk = (tests.bridge(t.token)).api_token_hk $$,
    $$ VALUES (2::bigint, 1, 600::double precision) $$,
    'after the debounce a new use is recorded with its gap'
);
SELECT is((SELECT (tests.bridge(t.token)).last_used_at FROM t), now(), 'last_used_at is now');

SELECT * FROM finish();
ROLLBACK;
