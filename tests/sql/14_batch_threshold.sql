-- The batch with an explicit p_threshold_days: it takes the tokens expiring within that
-- many days (found through the due index, bounded by the smallest policy threshold),
-- and nothing else.
BEGIN;
SELECT plan(6);

SELECT tests.bulk_tokens(5, 'PRODUCTION', '10 days');              -- ROTATE, within 14 days
SELECT tests.bulk_tokens(4, 'API_KEY', '10 days');                 -- EXTEND, within 14 days
SELECT tests.bulk_tokens(3, 'PRODUCTION', '20 days', 'far');       -- beyond 14 days
-- Predicted idle (refresh point now) but expiring beyond the threshold: not taken.
UPDATE auth.api_token_bridge SET refresh_after = now()
WHERE user_hk = auth.register_user(auth.register_tenant('bulk'), 'far');

SELECT results_eq(
    $$ SELECT tokens_found, (details -> 'counts' ->> 'extended')::int, (details -> 'counts' ->> 'enqueued')::int
       FROM auth.refresh_expiring_tokens_batch(p_threshold_days => 14, p_dry_run => TRUE) $$,
    $$ VALUES (9, 4, 5) $$,
    'a dry run with a 14-day threshold counts the 9 tokens expiring within it'
);
SELECT results_eq(
    $$ SELECT tokens_found, tokens_refreshed, (details -> 'counts' ->> 'enqueued')::int
       FROM auth.refresh_expiring_tokens_batch(p_threshold_days => 14, p_batch_size => 2) $$,
    $$ VALUES (9, 4, 5) $$,
    'the run extends the 4 EXTEND tokens and enqueues the 5 ROTATE ones'
);
SELECT is(
    (SELECT pg_catalog.array_agg(DISTINCT o.reason::text) FROM auth.token_refresh_outbox AS o),
    ARRAY['EXPIRING_SOON'],
    'never-used tokens inside the explicit threshold are EXPIRING_SOON: only usage predicts'
);
SELECT is(
    (SELECT count(*)::int FROM auth.api_token_bridge
     WHERE user_hk = auth.register_user(auth.register_tenant('bulk'), 'far')
       AND refresh_enqueued_at IS NULL AND expires_at < now() + interval '21 days'),
    3, 'the tokens beyond the threshold are untouched, the predicted-idle ones included'
);
SELECT results_eq(
    $$ SELECT tokens_found FROM auth.refresh_expiring_tokens_batch(p_threshold_days => 14) $$,
    $$ VALUES (0) $$,
    'a second run finds nothing: extended tokens left the window, enqueued ones the index'
);
SELECT results_eq(
    $$ SELECT tokens_found FROM auth.refresh_expiring_tokens_batch(p_threshold_days => 25) $$,
    $$ VALUES (3) $$,
    'a wider threshold reaches the far tokens'
);

SELECT * FROM finish();
ROLLBACK;
