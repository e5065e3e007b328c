-- The batch refresh: extends EXTEND tokens, enqueues ROTATE tokens, touches nothing
-- else, finds nothing new on a second run, and keeps details bounded and secret-free.
BEGIN;
SELECT plan(17);

SELECT tests.bulk_tokens(30, 'API_KEY', '3 days');      -- EXTEND, due
SELECT tests.bulk_tokens(25, 'PRODUCTION', '3 days');   -- ROTATE, due
SELECT tests.bulk_tokens(10, 'API_KEY', '20 days');     -- not due
SELECT tests.bulk_tokens(10, 'PRODUCTION', '20 days');  -- not due
CREATE TEMP TABLE revoked AS SELECT tests.make_token('3 days', 'API_KEY', '{api:read}', 'acme', 'r') AS token;
SELECT auth.revoke_api_token(token) FROM revoked;
CREATE TEMP TABLE untouched AS
SELECT b.* FROM auth.api_token_bridge AS b WHERE b.expires_at > now() + interval '10 days' OR b.is_revoked;

CREATE TEMP TABLE before AS SELECT tests.snapshot() AS s;
CREATE TEMP TABLE dry AS SELECT * FROM auth.refresh_expiring_tokens_batch(p_dry_run => TRUE);
SELECT results_eq(
    $$ SELECT tokens_found, tokens_refreshed, (details -> 'counts' ->> 'extended')::int,
              (details -> 'counts' ->> 'enqueued')::int FROM dry $$,
    $$ VALUES (55, 0, 30, 25) $$,
    'a dry run counts what a run would do'
);
SELECT is(
    regexp_replace(tests.snapshot(), 'token_refresh_batch_run:[0-9a-f]+ ', ''),
    (SELECT regexp_replace(s, 'token_refresh_batch_run:[0-9a-f]+ ', '') FROM before),
    'a dry run changes no table but the batch run log'
);
SELECT is(
    (SELECT count(*)::int FROM auth.token_refresh_outbox) + (SELECT count(*)::int FROM auth.token_refresh_event),
    0, 'a dry run enqueues and logs no refresh'
);

CREATE TEMP TABLE run1 AS SELECT * FROM auth.refresh_expiring_tokens_batch(p_batch_size => 7);
SELECT results_eq(
    $$ SELECT tokens_found, tokens_refreshed, tokens_failed FROM run1 $$,
    $$ VALUES (55, 30, 0) $$,
    'the run finds the 55 due tokens and extends the 30 EXTEND ones'
);
SELECT results_eq(
    $$ SELECT (details -> 'counts' ->> 'enqueued')::int, (details ->> 'batches')::int,
              jsonb_array_length(details -> 'items'), (details ->> 'items_truncated')::boolean
       FROM run1 $$,
    $$ VALUES (25, 8, 20, true) $$,
    'ROTATE tokens are counted as enqueued; batches of 7; details lists 20 items'
);
SELECT is(
    (SELECT count(*)::int FROM auth.api_token_bridge
     WHERE token_type = 'API_KEY' AND NOT is_revoked AND expires_at = now() + interval '90 days'),
    30, 'exactly the due EXTEND tokens got the policy time to live'
);
SELECT is(
    (SELECT count(*)::int FROM auth.token_refresh_outbox AS o
     INNER JOIN auth.api_token_bridge AS b ON o.api_token_hk = b.api_token_hk
     WHERE b.token_type = 'PRODUCTION' AND o.processed_at IS NULL AND o.reason = 'EXPIRING_SOON'),
    25, 'exactly the due ROTATE tokens are in the outbox'
);
SELECT is(
    (SELECT count(*)::int FROM auth.token_rotation_l), 0, 'the batch rotates nothing itself'
);
SELECT is_empty(
    $$ SELECT u.api_token_hk FROM untouched AS u JOIN auth.api_token_bridge AS b USING (token_hash)
       WHERE (b.*)::text <> (u.*)::text $$,
    'tokens that were not due, and revoked ones, are untouched'
);
SELECT is(tests.inconsistent_tokens(), 0::bigint, 'bridge and satellite agree for every token');
SELECT results_eq(
    $$ SELECT refresh_trigger, outcome, count(*)::int FROM auth.token_refresh_event
       GROUP BY 1, 2 ORDER BY 2 $$,
    $$ VALUES ('BATCH', 'ENQUEUED', 25), ('BATCH', 'EXTENDED', 30) $$,
    'every action is a BATCH refresh event'
);
SELECT is(
    (SELECT count(*)::int FROM run1 WHERE details::text ~ '[0-9a-f]{64}' OR details::text LIKE '%ovt_prod_%'),
    0, 'details holds no secret and no full hash'
);

CREATE TEMP TABLE run2 AS SELECT * FROM auth.refresh_expiring_tokens_batch();
SELECT results_eq(
    $$ SELECT tokens_found, tokens_refreshed, tokens_failed FROM run2 $$,
    $$ VALUES (0, 0, 0) $$,
    'a second run finds nothing new to do'
);

-- At the family's maximum lifetime an EXTEND token cannot be extended: it fails once.
SELECT auth.set_refresh_policy('API_KEY', p_max_lifetime => '100 days');
SELECT tests.advance_clock('85 days');
CREATE TEMP TABLE run3 AS SELECT * FROM auth.refresh_expiring_tokens_batch();
SELECT results_eq(
    $$ SELECT tokens_found, tokens_refreshed, tokens_failed FROM run3 $$,
    $$ VALUES (30, 30, 0) $$,
    'near the cap the tokens are extended up to it'
);
SELECT tests.advance_clock('14 days');
SELECT results_eq(
    $$ SELECT r.tokens_failed, (SELECT count(*)::int FROM auth.token_refresh_event WHERE reason = 'MAX_LIFETIME_REACHED')
       FROM auth.refresh_expiring_tokens_batch() AS r $$,
    $$ VALUES (0, 0) $$,
    'capped tokens have no refresh point, so the batch does not retry them'
);

SELECT throws_ok(
    $$ SELECT * FROM auth.refresh_expiring_tokens_batch(p_batch_size => 0) $$,
    '22023', 'invalid batch arguments', 'a zero batch size is refused'
);
SELECT throws_ok(
    $$ SELECT auth.schedule_token_refresh() $$, '0A000', NULL,
    'scheduling where pg_cron is absent raises feature_not_supported'
);

SELECT * FROM finish();
ROLLBACK;
