-- Issue a token, validate it, and each way a validation is refused.
BEGIN;
SELECT plan(17);

CREATE TEMP TABLE t AS
SELECT
    tests.make_token('30 days', 'PRODUCTION', '{api:read,api:write}') AS token,
    auth.register_tenant('acme') AS tenant_hk,
    auth.register_user(auth.register_tenant('acme'), 'alice') AS user_hk;

SELECT ok((SELECT token ~ '^ovt_prod_[0-9a-f]{64}$' FROM t), 'issued token has the documented format');

SELECT results_eq(
    $$ SELECT v.is_valid, v.user_hk, v.tenant_hk, v.scope, v.message
       FROM t, auth.validate_production_api_token(t.token, 'api:write') AS v $$,
    $$ SELECT true, t.user_hk, t.tenant_hk, '{api:read,api:write}'::text[], 'Token is valid'::text FROM t $$,
    'a fresh token validates with its user, tenant and scope'
);
SELECT ok(
    (SELECT abs(extract(EPOCH FROM v.expires_at - (now() + interval '30 days'))) < 1
     FROM t, auth.validate_production_api_token(t.token) AS v),
    'expires_at is 30 days from issue'
);
SELECT is(
    (SELECT v.is_valid FROM t, auth.validate_production_api_token(t.token) AS v), TRUE,
    'the default required scope is api:read'
);

SELECT results_eq(
    $$ SELECT v.is_valid, v.message FROM t, auth.validate_production_api_token(t.token, 'api:admin') AS v $$,
    $$ VALUES (false, 'Token lacks the required scope'::text) $$,
    'a wrong scope is refused with a clear message'
);
SELECT is(
    (SELECT v.user_hk FROM t, auth.validate_production_api_token(t.token, 'api:admin') AS v), NULL,
    'a refused validation reveals no user'
);

SELECT results_eq(
    $$ SELECT v.is_valid, v.message
       FROM auth.validate_production_api_token('ovt_prod_' || repeat('ab', 32)) AS v $$,
    $$ VALUES (false, 'Token not found'::text) $$,
    'an unknown token is refused'
);

-- Expired: issued with a short life, then the clock moves past it.
CREATE TEMP TABLE e AS SELECT tests.make_token('1 hour') AS token;
SELECT tests.advance_clock('2 hours');
SELECT results_eq(
    $$ SELECT v.is_valid, v.message FROM e, auth.validate_production_api_token(e.token) AS v $$,
    $$ VALUES (false, 'Token has expired'::text) $$,
    'an expired token is refused'
);

-- Revoked.
SELECT ok((SELECT auth.revoke_api_token(t.token, 'test') FROM t), 'revoke returns true');
SELECT results_eq(
    $$ SELECT v.is_valid, v.message FROM t, auth.validate_production_api_token(t.token, 'api:read') AS v $$,
    $$ VALUES (false, 'Token has been revoked'::text) $$,
    'a revoked token is refused'
);
SELECT is((SELECT auth.revoke_api_token(t.token) FROM t), FALSE, 'revoking twice returns false');
SELECT is(
    (SELECT count(*)::int FROM auth.api_token_s AS s, t
     WHERE s.token_hash = sha256(convert_to(t.token, 'UTF8'))),
    2, 'revocation end-dated the satellite row and inserted a revoked one'
);
SELECT is(
    (SELECT s.is_revoked FROM auth.api_token_s AS s, t
     WHERE s.token_hash = sha256(convert_to(t.token, 'UTF8')) AND s.load_end_date IS NULL),
    TRUE, 'the current satellite row is revoked'
);
SELECT is(
    (SELECT count(*)::int FROM auth.security_event WHERE event_type = 'TOKEN_REVOKED'), 1,
    'the revocation is a security event'
);

-- Issue refuses what it cannot store.
SELECT throws_ok(
    $$ SELECT * FROM auth.generate_production_api_token(sha256('nobody'), sha256('nowhere')) $$,
    '23503', 'unknown user for this tenant', 'issuing for an unknown user fails clearly'
);
SELECT throws_ok(
    $$ SELECT tests.make_token('30 days', 'PRODUCTION', '{}') $$,
    '22023', 'scope must be a non-empty array of names like api:read',
    'issuing with an empty scope fails clearly'
);

-- No table holds a plaintext token, nor its 64 hex characters.
SELECT is_empty(
    $$ SELECT 1 FROM t, e, tests.table_dump() AS d
       WHERE strpos(d.content, substr(t.token, 10)) > 0 OR strpos(d.content, substr(e.token, 10)) > 0 $$,
    'no table holds a plaintext token'
);

SELECT * FROM finish();
ROLLBACK;
