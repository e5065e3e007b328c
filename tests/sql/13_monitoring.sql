-- Monitoring views and alerts: each alert appears with its cause and clears without it.
BEGIN;
SELECT plan(21);

CREATE TEMP TABLE alerts_now (alert text);
CREATE FUNCTION pg_temp.open_alerts() RETURNS text[] LANGUAGE sql AS
$$ SELECT coalesce(array_agg(alert ORDER BY alert), '{}') FROM auth.refresh_alerts $$;

SELECT is(pg_temp.open_alerts(), '{}'::text[], 'an empty installation has no open alert');

-- Tokens: two near expiry and used (refreshed on use), one idle ROTATE token expiring
-- in 12 hours (no refresh path), one EXTEND token.
CREATE TEMP TABLE t AS SELECT
    tests.make_token('3 days') AS used,
    tests.make_token('12 hours', 'PRODUCTION', '{api:read}', 'acme', 'idle') AS idle,
    tests.make_token('20 days', 'API_KEY', '{api:read}', 'other', 'svc') AS key;
SELECT auth.validate_and_refresh_api_token(used) FROM t;

SELECT results_eq(
    $$ SELECT refresh_trigger, outcome, reason, attempts FROM auth.refresh_metrics_hourly $$,
    $$ VALUES ('ON_DEMAND', 'ROTATED', 'EXPIRING_SOON', 1::bigint) $$,
    'refresh metrics count the rotation by trigger, outcome and reason'
);
SELECT results_eq(
    $$ SELECT days_ahead, with_refresh_path, without_refresh_path FROM auth.token_expiry_forecast
       WHERE with_refresh_path + without_refresh_path > 0 ORDER BY days_ahead $$,
    $$ VALUES (0, 0::bigint, 1::bigint), (20, 1::bigint, 0::bigint) $$,
    'the forecast splits expiring tokens by refresh path (idle ROTATE token: none)'
);
SELECT is((SELECT count(*)::int FROM auth.token_expiry_forecast), 30, 'the forecast has 30 days');
SELECT results_eq(
    $$ SELECT tenant, live_tokens, idle_tokens FROM auth.tenant_usage_patterns ORDER BY tenant $$,
    $$ VALUES ('acme', 2::bigint, 2::bigint), ('other', 1::bigint, 1::bigint) $$,
    'usage per tenant counts live and idle (never used) tokens'
);
SELECT results_eq(
    $$ SELECT use_count, is_idle FROM auth.token_usage_patterns WHERE tenant = 'acme' ORDER BY use_count $$,
    $$ VALUES (0::bigint, true), (0::bigint, true) $$,
    'usage per token: the unused successor and the idle token are idle'
);

SELECT is(
    pg_temp.open_alerts(), '{BATCH_JOB_STALE,EXPIRING_WITHOUT_REFRESH_PATH}'::text[],
    'a batch job that never ran and a token expiring with no refresh path are alerts'
);

-- The batch job runs: its alert clears. A refresher takes the idle token: so does that one.
SELECT auth.refresh_expiring_tokens_batch();
SELECT auth.record_refresher_heartbeat('host:/store', ARRAY[(SELECT idle FROM t)]);
SELECT is(pg_temp.open_alerts(), '{}'::text[], 'both clear when the batch ran and a refresher holds the token');
SELECT is(
    (SELECT without_refresh_path FROM auth.token_expiry_forecast WHERE days_ahead = 0), 0::bigint,
    'the forecast counts the refresher-held token as having a refresh path'
);

-- Time passes: the batch job and the refresher go stale.
UPDATE auth.token_refresh_batch_run SET started_at = started_at - interval '13 hours';
SELECT is(pg_temp.open_alerts(), '{BATCH_JOB_STALE}'::text[], 'no batch run within twice its interval');
UPDATE auth.refresher_heartbeat SET last_seen_at = last_seen_at - interval '3 hours';
SELECT ok('REFRESHER_NOT_SEEN' = any(pg_temp.open_alerts()), 'a refresher not seen for 3 hours');
SELECT auth.refresh_expiring_tokens_batch();
SELECT auth.record_refresher_heartbeat('host:/store', ARRAY[(SELECT idle FROM t)]);
SELECT is(pg_temp.open_alerts(), '{}'::text[], 'both clear when they run again');

-- Failures: 1 of 5 attempts in the last hour is 20 %, above the 5 % threshold.
INSERT INTO auth.token_refresh_event (api_token_hk, tenant_hk, refresh_trigger, outcome, reason)
SELECT (tests.bridge(t.key)).api_token_hk, (tests.bridge(t.key)).tenant_hk, 'BATCH', v.o, v.r
FROM t, (VALUES ('EXTENDED', 'EXPIRY_EXTENDED'), ('EXTENDED', 'EXPIRY_EXTENDED'),
                ('EXTENDED', 'EXPIRY_EXTENDED'), ('FAILED', 'REFRESH_FAILED')) AS v (o, r);
SELECT results_eq(
    $$ SELECT alert, severity, observed FROM auth.refresh_alerts $$,
    $$ VALUES ('REFRESH_FAILURE_RATE', 'critical', 0.2000) $$,
    'a failure rate above the threshold is a critical alert'
);
UPDATE auth.token_refresh_event SET occurred_at = occurred_at - interval '2 hours';
SELECT is(pg_temp.open_alerts(), '{}'::text[], 'it clears when the failures are older than an hour');
UPDATE auth.monitoring_config SET failure_rate_threshold = 0.5;
UPDATE auth.token_refresh_event SET occurred_at = occurred_at + interval '2 hours';
SELECT is(pg_temp.open_alerts(), '{}'::text[], 'the threshold is configurable');

-- Reuse: a rotated token presented after its grace.
CREATE TEMP TABLE r AS SELECT tests.make_token('3 days', 'API', '{api:read}', 'acme', 'victim') AS old;
ALTER TABLE r ADD COLUMN new text;
UPDATE r SET new = (SELECT v.new_token FROM auth.validate_and_refresh_api_token(r.old) AS v);
SELECT auth.validate_production_api_token(new) FROM r;
SELECT tests.advance_clock('2 minutes');
SELECT auth.validate_production_api_token(old) FROM r;
SELECT results_eq(
    $$ SELECT alert, severity, observed FROM auth.refresh_alerts WHERE alert = 'REUSE_DETECTED' $$,
    $$ VALUES ('REUSE_DETECTED', 'critical', 1::numeric) $$,
    'token reuse is a critical alert'
);
UPDATE auth.security_event SET occurred_at = occurred_at - interval '25 hours';
SELECT ok(NOT 'REUSE_DETECTED' = any(pg_temp.open_alerts()), 'it clears after 24 hours');

-- Who may read what.
SET LOCAL ROLE pyvault_monitor;
SELECT lives_ok($$ SELECT * FROM auth.refresh_alerts $$, 'pyvault_monitor reads the alerts');
SELECT lives_ok($$ SELECT * FROM auth.token_expiry_forecast $$, 'pyvault_monitor reads the forecast');
SELECT throws_ok($$ SELECT * FROM auth.api_token_bridge $$, '42501', NULL,
                 'pyvault_monitor cannot read a token table');
RESET ROLE;
SET LOCAL ROLE pyvault_api;
SELECT throws_ok($$ SELECT * FROM auth.refresh_metrics_hourly $$, '42501', NULL,
                 'pyvault_api cannot read the monitoring views');
RESET ROLE;

SELECT * FROM finish();
ROLLBACK;
