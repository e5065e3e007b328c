-- Lifecycle pruning: a rotated token past its grace leaves the bridge and the vault for
-- auth.spent_token, and presenting it again is still reuse for the rest of its family's
-- life; a dead family is removed whole after the retention; history past its retention
-- goes; bad batch sizes are refused and write nothing.
BEGIN;
SELECT plan(17);

CREATE TEMP TABLE t0 AS SELECT tests.make_token('3 days') AS token;
CREATE TEMP TABLE t1 AS
SELECT v.new_token AS token FROM t0, auth.validate_and_refresh_api_token(t0.token) AS v;
CREATE TEMP TABLE ids AS
SELECT (tests.bridge(t0.token)).api_token_hk AS old_hk, (tests.bridge(t0.token)).family_hk AS family_hk
FROM t0;
SELECT is((SELECT v.is_valid FROM t1, auth.validate_and_refresh_api_token(t1.token) AS v), TRUE,
          'the successor is used, which starts its predecessor''s grace');
SELECT results_eq(
    $$ SELECT tokens_spent, families_removed FROM auth.prune_token_history_batch() $$,
    $$ VALUES (0, 0) $$,
    'nothing to prune while the predecessor is in its grace window'
);
UPDATE auth.api_token_bridge SET valid_until = now() - interval '1 second'
WHERE api_token_hk = (SELECT old_hk FROM ids);
SELECT results_eq(
    $$ SELECT tokens_spent, families_removed, more, skipped FROM auth.prune_token_history_batch() $$,
    $$ VALUES (1, 0, false, false) $$,
    'past its grace, the predecessor is spent'
);
SELECT is(
    (SELECT pg_catalog.jsonb_build_object(
        'bridge', (SELECT count(*) FROM auth.api_token_bridge AS b WHERE b.api_token_hk = i.old_hk),
        'hub', (SELECT count(*) FROM auth.api_token_h AS h WHERE h.api_token_hk = i.old_hk),
        'satellite', (SELECT count(*) FROM auth.api_token_s AS s WHERE s.api_token_hk = i.old_hk),
        'links', (SELECT count(*) FROM auth.token_rotation_l AS l
                  WHERE i.old_hk IN (l.predecessor_hk, l.successor_hk)),
        'spent', (SELECT count(*) FROM auth.spent_token AS s, t0
                  WHERE s.token_key = auth._hash_key(sha256(convert_to(t0.token, 'UTF8')))))
     FROM ids AS i),
    '{"bridge": 0, "hub": 0, "satellite": 0, "links": 0, "spent": 1}'::jsonb,
    'its bridge row and vault rows are gone; one narrow spent row is kept'
);
SELECT results_eq(
    $$ SELECT s.token_key = auth._hash_key(sha256(convert_to(t0.token, 'UTF8'))),
              s.family_hk = i.family_hk, s.generation
       FROM t0, ids AS i, auth.spent_token AS s $$,
    $$ VALUES (true, true, 0) $$,
    'the spent row holds a key of the token''s hash (never the token), its family and generation'
);
SELECT is((SELECT v.is_valid FROM t1, auth.validate_production_api_token(t1.token) AS v), TRUE,
          'the successor is still valid');
SELECT results_eq(
    $$ SELECT v.is_valid, v.refresh_reason::text, v.message
       FROM t0, auth.validate_and_refresh_api_token(t0.token) AS v $$,
    $$ VALUES (false, 'REUSE_DETECTED', 'Token was rotated and its grace window has ended') $$,
    'presenting the spent token again is reuse'
);
SELECT is((SELECT v.message FROM t1, auth.validate_production_api_token(t1.token) AS v),
          'Token has been revoked', 'reuse of a spent token revoked the whole family');
SELECT is(
    (SELECT count(*)::int FROM auth.security_event AS e, ids AS i
     WHERE e.event_type = 'TOKEN_REUSE' AND e.family_hk = i.family_hk
       AND e.api_token_hk IS NULL AND e.tokens_revoked = 1),
    1, 'and recorded a security event for its family (the spent token''s identity is gone)'
);

-- The family is dead (revoked). Once its newest token expired longer than the retention
-- ago, the family goes whole: the spent row too.
UPDATE auth.api_token_bridge SET expires_at = now() - interval '91 days',
                                 valid_until = now() - interval '91 days'
WHERE family_hk = (SELECT family_hk FROM ids);
SELECT results_eq(
    $$ SELECT families_removed, tokens_removed FROM auth.prune_token_history_batch() $$,
    $$ VALUES (1, 2) $$,
    'the dead family is removed: its head and its spent token'
);
SELECT is(
    (SELECT (SELECT count(*) FROM auth.api_token_bridge AS b WHERE b.family_hk = i.family_hk)
          + (SELECT count(*) FROM auth.spent_token AS s WHERE s.family_hk = i.family_hk)
     FROM ids AS i)::int,
    0, 'nothing of the family is left'
);
SELECT is((SELECT v.message FROM t1, auth.validate_production_api_token(t1.token) AS v),
          'Token not found', 'its tokens are then simply unknown');

-- History past its retention goes, newer history stays.
INSERT INTO auth.token_refresh_event (occurred_at, api_token_hk, tenant_hk, refresh_trigger,
                                      outcome, reason)
SELECT now() - d * interval '1 day', '\x00', '\x00', 'BATCH', 'NOT_NEEDED', 'NO_REFRESH_NEEDED'
FROM pg_catalog.generate_series(20, 40) AS d;
SELECT results_eq(
    $$ SELECT rows_deleted FROM auth.prune_token_history_batch() $$,
    $$ VALUES (10) $$,
    'the refresh events older than 30 days are deleted'
);
SELECT is((SELECT count(*)::int FROM auth.token_refresh_event WHERE occurred_at < now() - interval '19 days'),
          11, 'the younger ones stay');

-- Bad input is refused with a clear error and writes nothing.
CREATE TEMP TABLE before AS SELECT tests.row_counts() AS counts;
SELECT throws_ok(
    $$ SELECT * FROM auth.prune_token_history_batch(0) $$,
    '22023', 'p_batch_size must be between 1 and 100000', 'a batch size of 0 is refused'
);
SELECT throws_ok(
    $$ SELECT * FROM auth.prune_token_history_batch(NULL) $$,
    '22023', 'p_batch_size must be between 1 and 100000', 'a NULL batch size is refused'
);
SELECT is(tests.row_counts(), (SELECT b.counts FROM before AS b), 'the refused calls wrote nothing');

SELECT * FROM finish();
ROLLBACK;
