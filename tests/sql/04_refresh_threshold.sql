-- The seed note's calls work verbatim; the threshold is exact to the second.
BEGIN;
SELECT plan(14);

SELECT is(
    pg_get_function_result('auth.validate_and_refresh_api_token(text, text)'::regprocedure),
    'TABLE(is_valid boolean, user_hk bytea, tenant_hk bytea, scope text[], '
    || 'expires_at timestamp with time zone, new_token text, was_refreshed boolean, '
    || 'refresh_reason character varying, message text)',
    'validate_and_refresh_api_token returns the nine columns of the seed note'
);
SELECT is(
    pg_get_function_result('auth.refresh_production_token_enhanced(text, integer, boolean, text)'::regprocedure),
    'TABLE(success boolean, new_token text, expires_at timestamp with time zone, '
    || 'refresh_reason character varying, message text)',
    'refresh_production_token_enhanced returns the seed columns'
);
CREATE TEMP TABLE tok AS SELECT
    tests.make_token('7 days 1 second') AS outside,
    tests.make_token('7 days -1 second') AS inside,
    tests.make_token('20 days') AS far,
    tests.make_token('3 days') AS revoked,
    tests.make_token('1 hour') AS expired;

SELECT results_eq(
    $$ SELECT v.is_valid, v.was_refreshed, v.new_token IS NULL, v.refresh_reason::text
       FROM tok, auth.validate_and_refresh_api_token(tok.outside, 'api:read') AS v $$,
    $$ VALUES (true, false, true, 'NO_REFRESH_NEEDED') $$,
    '7 days plus 1 second before expiry: valid, no refresh'
);
SELECT results_eq(
    $$ SELECT r.success, r.new_token IS NULL, r.refresh_reason::text
       FROM tok, auth.refresh_production_token_enhanced(tok.outside, 7, false) AS r $$,
    $$ VALUES (false, true, 'NO_REFRESH_NEEDED') $$,
    'refresh outside the threshold does nothing (NO_REFRESH_NEEDED)'
);
SELECT results_eq(
    $$ SELECT v.is_valid, v.was_refreshed, v.new_token ~ '^ovt_prod_[0-9a-f]{64}$', v.refresh_reason::text
       FROM tok, auth.validate_and_refresh_api_token(tok.inside, 'api:read') AS v $$,
    $$ VALUES (true, true, true, 'EXPIRING_SOON') $$,
    '7 days minus 1 second before expiry: refreshed with a new token'
);
SELECT ok(
    (SELECT v.expires_at > now() + interval '29 days'
     FROM tok, auth.validate_and_refresh_api_token(tok.inside) AS v),
    'the refreshed expiry is the policy time to live from now'
);
SELECT results_eq(
    $$ SELECT r.success, r.refresh_reason::text
       FROM tok, auth.refresh_production_token_enhanced(tok.outside, 8, false) AS r $$,
    $$ VALUES (true, 'EXPIRING_SOON') $$,
    'a larger p_threshold_days brings the token inside its threshold'
);
SELECT results_eq(
    $$ SELECT r.success, r.new_token IS NOT NULL, r.refresh_reason::text
       FROM tok, auth.refresh_production_token_enhanced(tok.far, 7, true) AS r $$,
    $$ VALUES (true, true, 'FORCED') $$,
    'force refreshes a token far from expiry'
);
SELECT results_eq(
    $$ SELECT s.is_valid, s.refresh_recommended, s.refresh_reason::text
       FROM tok, auth.get_token_refresh_status(tok.inside) AS s $$,
    $$ VALUES (true, true, 'ALREADY_REFRESHED') $$,
    'status of a rotated token recommends picking up its successor'
);
SELECT ok(
    (SELECT s.time_until_expiry BETWEEN interval '6 days 23:59:58' AND interval '6 days 23:59:59'
     FROM tok, auth.get_token_refresh_status(tok.inside) AS s),
    'time_until_expiry is exact, not truncated to days'
);

SELECT auth.revoke_api_token(revoked) FROM tok;
SELECT results_eq(
    $$ SELECT r.success, r.refresh_reason::text, r.message
       FROM tok, auth.refresh_production_token_enhanced(tok.revoked, 7, true) AS r $$,
    $$ VALUES (false, 'TOKEN_INVALID', 'Token has been revoked'::text) $$,
    'a revoked token cannot be refreshed, even forced'
);
SELECT tests.advance_clock('2 hours');
SELECT results_eq(
    $$ SELECT r.success, r.refresh_reason::text, r.message
       FROM tok, auth.refresh_production_token_enhanced(tok.expired, 7, true) AS r $$,
    $$ VALUES (false, 'TOKEN_INVALID', 'Token has expired'::text) $$,
    'an expired token cannot be refreshed, even forced'
);
SELECT is(
    (SELECT array_agg(DISTINCT outcome ORDER BY outcome) FROM auth.token_refresh_event),
    '{NOT_NEEDED,REJECTED,ROTATED}'::text[],
    'every attempt left a refresh event'
);
SELECT is(
    (SELECT array_agg(DISTINCT refresh_trigger ORDER BY refresh_trigger) FROM auth.token_refresh_event),
    '{FORCED,ON_DEMAND}'::text[],
    'events carry their trigger'
);

SELECT * FROM finish();
ROLLBACK;
