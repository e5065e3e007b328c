-- EXTEND keeps the secret, moves expires_at, and respects the family's maximum lifetime.
BEGIN;
SELECT plan(9);

SELECT auth.set_refresh_policy('API_KEY', p_time_to_live => '30 days', p_max_lifetime => '40 days');
CREATE TEMP TABLE k AS SELECT tests.make_token('30 days', 'API_KEY') AS token;
SELECT tests.advance_clock('25 days');

SELECT results_eq(
    $$ SELECT v.is_valid, v.was_refreshed, v.new_token IS NULL, v.refresh_reason::text
       FROM k, auth.validate_and_refresh_api_token(k.token) AS v $$,
    $$ VALUES (true, true, true, 'EXPIRY_EXTENDED') $$,
    'an EXTEND token within its threshold is extended, with no new secret'
);
SELECT is(
    (SELECT (tests.bridge(k.token)).expires_at FROM k), now() + interval '15 days',
    'the extension is capped at the family maximum lifetime (40 days from issue)'
);
SELECT is(
    (SELECT v.is_valid FROM k, auth.validate_production_api_token(k.token) AS v), TRUE,
    'the same secret keeps working'
);
SELECT results_eq(
    $$ SELECT s.expires_at, s.load_end_date IS NULL
       FROM k, auth.api_token_s AS s
       WHERE s.token_hash = sha256(convert_to(k.token, 'UTF8'))
       ORDER BY s.load_date $$,
    $$ VALUES (now() + interval '5 days', false), (now() + interval '15 days', true) $$,
    'the satellite keeps the history: old expiry end-dated, new expiry current'
);
SELECT is(
    (SELECT (tests.bridge(k.token)).refresh_after FROM k), 'infinity'::timestamptz,
    'at the cap no further refresh is scheduled'
);

SELECT tests.advance_clock('10 days');
SELECT results_eq(
    $$ SELECT v.is_valid, v.was_refreshed, v.refresh_reason::text
       FROM k, auth.validate_and_refresh_api_token(k.token) AS v $$,
    $$ VALUES (true, false, 'MAX_LIFETIME_REACHED') $$,
    'validation at the cap says the token cannot be refreshed'
);
SELECT results_eq(
    $$ SELECT r.success, r.refresh_reason::text
       FROM k, auth.refresh_production_token_enhanced(k.token, 7, true) AS r $$,
    $$ VALUES (false, 'MAX_LIFETIME_REACHED') $$,
    'even a forced refresh cannot pass the cap'
);
SELECT results_eq(
    $$ SELECT s.refresh_recommended, s.refresh_reason::text
       FROM k, auth.get_token_refresh_status(k.token) AS s $$,
    $$ VALUES (false, 'MAX_LIFETIME_REACHED') $$,
    'status reports the cap'
);
SELECT is(
    (SELECT count(*)::int FROM auth.token_rotation_l), 0, 'EXTEND never creates a successor'
);

SELECT * FROM finish();
ROLLBACK;
