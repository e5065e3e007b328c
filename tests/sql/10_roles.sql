-- Permissions, tested as the roles themselves.
BEGIN;
SELECT plan(19);

CREATE TEMP TABLE t AS SELECT tests.make_token('30 days') AS token;
GRANT SELECT ON t TO pyvault_api, pyvault_monitor, pyvault_admin, pyvault_refresher;

SET LOCAL ROLE pyvault_api;
SELECT is((SELECT v.is_valid FROM t, auth.validate_production_api_token(t.token) AS v), TRUE,
          'pyvault_api can validate');
SELECT is((SELECT v.is_valid FROM t, auth.validate_and_refresh_api_token(t.token) AS v), TRUE,
          'pyvault_api can validate and refresh');
SELECT is((SELECT s.is_valid FROM t, auth.get_token_refresh_status(t.token) AS s), TRUE,
          'pyvault_api can read refresh status');
SELECT throws_ok($$ SELECT * FROM auth.api_token_bridge $$, '42501', NULL,
                 'pyvault_api cannot read the bridge');
SELECT throws_ok($$ SELECT * FROM auth.api_token_s $$, '42501', NULL,
                 'pyvault_api cannot read the satellite');
SELECT throws_ok($$ SELECT * FROM auth.generate_production_api_token(NULL, NULL) $$, '42501', NULL,
                 'pyvault_api cannot issue tokens');
SELECT throws_ok($$ SELECT auth.revoke_api_token('x') $$, '42501', NULL,
                 'pyvault_api cannot revoke tokens');
SELECT throws_ok($$ SELECT * FROM auth.test_token_refresh_system('x') $$, '42501', NULL,
                 'pyvault_api cannot run diagnostics');
SELECT throws_ok($$ SELECT auth._new_token_secret() $$, '42501', NULL,
                 'pyvault_api cannot call private helpers');
SELECT throws_ok($$ SELECT auth.record_refresher_heartbeat('intruder', '{}') $$, '42501', NULL,
                 'pyvault_api cannot record a refresher heartbeat');
RESET ROLE;

SET LOCAL ROLE pyvault_refresher;
SELECT is((SELECT s.is_valid FROM t, auth.get_token_refresh_status(t.token) AS s), TRUE,
          'pyvault_refresher can read refresh status');
SELECT is(
    (SELECT auth.record_refresher_heartbeat('host:/store', ARRAY[t.token]) FROM t), 1,
    'pyvault_refresher can record its heartbeat'
);
SELECT lives_ok($$ LISTEN pyvault_token_refresh $$, 'pyvault_refresher can listen for the outbox');
SELECT throws_ok($$ SELECT * FROM auth.token_refresh_outbox $$, '42501', NULL,
                 'pyvault_refresher cannot read the outbox');
SELECT throws_ok($$ SELECT * FROM auth.api_token_bridge $$, '42501', NULL,
                 'pyvault_refresher cannot read the bridge');
SELECT throws_ok($$ SELECT * FROM auth.validate_production_api_token('x') $$, '42501', NULL,
                 'pyvault_refresher cannot validate');
RESET ROLE;

SET LOCAL ROLE pyvault_monitor;
SELECT throws_ok($$ SELECT * FROM auth.validate_production_api_token('x') $$, '42501', NULL,
                 'pyvault_monitor cannot validate');
RESET ROLE;

SET LOCAL ROLE pyvault_admin;
SELECT ok(
    (SELECT auth.revoke_api_token(t.token, 'admin test') FROM t), 'pyvault_admin can revoke'
);
SELECT is(
    (SELECT d.result FROM t, auth.test_token_refresh_system(t.token) AS d WHERE d.step = 'VALIDATION'),
    'FAIL: Token has been revoked',
    'pyvault_admin can run diagnostics, which see the revocation'
);
RESET ROLE;

SELECT * FROM finish();
ROLLBACK;
