-- test_token_refresh_system: the seed call works, is non-destructive by default, never
-- prints a whole token, really refreshes with p_apply, and shows nothing of an input that
-- is not a well-formed token (a well-formed one: 'ovt_prod_' and 4 hex at most).
BEGIN;
SELECT plan(17);

CREATE TEMP TABLE t AS SELECT tests.make_token('3 days') AS token, tests.make_token('30 days') AS other;
CREATE TEMP TABLE before AS SELECT tests.snapshot() AS s;
CREATE TEMP TABLE d AS SELECT r.* FROM t, auth.test_token_refresh_system(t.token) AS r;

SELECT results_eq(
    $$ SELECT step FROM d $$,
    $$ VALUES ('FORMAT'), ('LOOKUP'), ('VALIDATION'), ('REFRESH_STATUS'), ('POLICY'), ('LINEAGE'),
              ('REFRESH_DRY_RUN'), ('SCHEDULE'), ('SECURITY') $$,
    'the seed call returns every step in order'
);
SELECT is(tests.snapshot(), (SELECT s FROM before), 'the dry run left every table unchanged');
SELECT is(
    (SELECT count(*)::int FROM d WHERE result LIKE 'FAIL%'), 0, 'a healthy token has no FAIL step'
);
SELECT results_eq(
    $$ SELECT (details ->> 'would_succeed')::boolean, details ->> 'refresh_reason' FROM d
       WHERE step = 'REFRESH_DRY_RUN' $$,
    $$ VALUES (true, 'FORCED') $$,
    'the dry run reports what a refresh would do'
);
SELECT is(
    (SELECT count(*)::int FROM d, t
     WHERE d.details::text LIKE '%' || substr(t.token, 10) || '%'
        OR d.result LIKE '%' || substr(t.token, 10) || '%'
        OR d.details::text ~ '[0-9a-f]{64}'),
    0, 'no step shows a whole token or a full hash'
);
SELECT is(
    (SELECT result FROM d WHERE step = 'SECURITY'), 'OK', 'the security step finds nothing wrong'
);

CREATE TEMP TABLE applied AS
SELECT r.* FROM t, auth.test_token_refresh_system(t.token, p_apply => TRUE) AS r;
SELECT ok((SELECT (tests.bridge(t.token)).successor_hk IS NOT NULL FROM t), 'p_apply really refreshes');
SELECT results_eq(
    $$ SELECT refresh_trigger, outcome FROM auth.token_refresh_event $$,
    $$ VALUES ('DIAGNOSTIC', 'ROTATED') $$,
    'the applied refresh is recorded with the DIAGNOSTIC trigger'
);
SELECT results_eq(
    $$ SELECT v.refresh_reason::text FROM t, auth.validate_and_refresh_api_token(t.token) AS v $$,
    $$ VALUES ('ALREADY_REFRESHED') $$,
    'the holder then receives the successor'
);

-- Malformed input. Allowed in the output: the fixed texts, the input's length and two
-- booleans. Each marker is a piece of its input that the old 13-character echo showed.
CREATE TEMP TABLE bad (n integer GENERATED ALWAYS AS IDENTITY, kind text, input text, marker text);
INSERT INTO bad (kind, input, marker)
SELECT v.kind, v.input, v.marker
FROM t, LATERAL (VALUES
    ('garbage', 'zq-garbage-KJH42!', 'garb'),
    ('garbage', 'not-a-token', 'not-a'),
    ('garbage', '', NULL),
    ('garbage', NULL, NULL),
    ('garbage', 'ovt_prod_', NULL),
    ('garbage', 'ovt_prod_' || repeat('g', 64), 'ggg'),
    ('garbage', t.other || '0', substr(t.other, 10, 4)),
    ('garbage', left(t.other, 72), substr(t.other, 10, 4)),
    ('megabyte', repeat('x', 1048576), 'xxx'),
    ('megabyte', 'ovt_prod_' || repeat('megabyte', 131072), 'mega'),
    ('megabyte', t.other || repeat(' ', 1048576), substr(t.other, 10, 4)),
    ('sql', '''; DROP TABLE auth.api_token_bridge; --', 'DROP'),
    ('sql', 'ovt_prod_'' OR ''1''=''1', ''' OR'),
    ('sql', 'ovt_prod_%_\";$$--', '%_\'),
    ('sql', 'ovt_prod_''); SELECT pg_sleep(10); --', ''');'),
    ('upper', 'ovt_prod_' || upper(substr(t.other, 10)), upper(substr(t.other, 10, 4))),
    ('upper', 'OVT_PROD_' || substr(t.other, 10), 'OVT_'),
    ('upper', 'ovt_prod_' || upper(repeat('deadbeef', 8)), 'DEAD'),
    ('whitespace', ' ' || t.other, substr(t.other, 10, 3)),
    ('whitespace', E'\t' || t.other, substr(t.other, 10, 3)),
    ('whitespace', t.other || E'\n', substr(t.other, 10, 4)),
    ('whitespace', t.other || ' ', substr(t.other, 10, 4)),
    ('whitespace', left(t.other, 40) || ' ' || substr(t.other, 41, 32), substr(t.other, 10, 4)),
    ('whitespace', '   ', NULL),
    ('whitespace', E' \t\r\n ', NULL)
) AS v (kind, input, marker);

CREATE TEMP TABLE shown AS
SELECT
    b.n,
    r.step = 'FORMAT'
    AND r.result = 'FAIL: not ovt_prod_ followed by 64 lower-case hex'
    AND r.details - '{length,prefix_ok,lowercase_hex_ok}'::text[] = '{"token_prefix": "(not a token)…"}'
    AND jsonb_typeof(r.details -> 'length') IN ('number', 'null')
    AND jsonb_typeof(r.details -> 'prefix_ok') = 'boolean'
    AND jsonb_typeof(r.details -> 'lowercase_hex_ok') = 'boolean'
    AND (b.marker IS NULL OR strpos(
        r.result || (r.details - 'length')::text || coalesce(r.details ->> 'token_prefix', ''),
        b.marker
    ) = 0) AS clean
FROM bad AS b, auth.test_token_refresh_system(b.input) AS r;

SELECT results_eq(
    $$ SELECT n, count(*)::int FROM shown GROUP BY n ORDER BY n $$,
    $$ SELECT n, 1 FROM bad ORDER BY n $$,
    'every malformed input gets one row: the FORMAT step'
);
SELECT is(
    (SELECT array_agg(b.n ORDER BY b.n) FROM bad AS b LEFT JOIN shown AS s ON b.n = s.n
     WHERE b.kind = 'garbage' AND NOT coalesce(s.clean, FALSE)),
    NULL::integer[],
    'garbage, empty, NULL, wrong length: FAIL with a fixed placeholder, nothing of the input'
);
SELECT is(
    (SELECT array_agg(b.n ORDER BY b.n) FROM bad AS b LEFT JOIN shown AS s ON b.n = s.n
     WHERE b.kind = 'megabyte' AND NOT coalesce(s.clean, FALSE)),
    NULL::integer[],
    'a megabyte of text: FAIL with a fixed placeholder, nothing of the input'
);
SELECT is(
    (SELECT array_agg(b.n ORDER BY b.n) FROM bad AS b LEFT JOIN shown AS s ON b.n = s.n
     WHERE b.kind = 'sql' AND NOT coalesce(s.clean, FALSE)),
    NULL::integer[],
    'SQL metacharacters: FAIL with a fixed placeholder, nothing of the input'
);
SELECT is(
    (SELECT array_agg(b.n ORDER BY b.n) FROM bad AS b LEFT JOIN shown AS s ON b.n = s.n
     WHERE b.kind = 'upper' AND NOT coalesce(s.clean, FALSE)),
    NULL::integer[],
    'upper-case hex or prefix: FAIL with a fixed placeholder, nothing of the input'
);
SELECT is(
    (SELECT array_agg(b.n ORDER BY b.n) FROM bad AS b LEFT JOIN shown AS s ON b.n = s.n
     WHERE b.kind = 'whitespace' AND NOT coalesce(s.clean, FALSE)),
    NULL::integer[],
    'whitespace around, inside or alone: FAIL with a fixed placeholder, nothing of the input'
);

-- Well-formed input keeps its short prefix.
SELECT is(
    (SELECT d.details ->> 'token_prefix' FROM d WHERE d.step = 'FORMAT'),
    (SELECT left(t.token, 13) || '…' FROM t),
    'a well-formed token shows ovt_prod_ and 4 hex characters'
);
SELECT results_eq(
    $$ SELECT r.step, r.result, r.details ->> 'token_prefix'
       FROM auth.test_token_refresh_system('ovt_prod_' || repeat('0', 64)) AS r $$,
    $$ VALUES ('FORMAT', 'OK', 'ovt_prod_0000…'),
              ('LOOKUP', 'FAIL: no token with this hash', 'ovt_prod_0000…') $$,
    'an unknown well-formed token shows its prefix and stops at LOOKUP'
);

SELECT * FROM finish();
ROLLBACK;
