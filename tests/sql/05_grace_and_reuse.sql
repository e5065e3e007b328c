-- Rotation keeps the predecessor alive until the successor is used plus the grace
-- window; only the immediate predecessor gets grace; reuse after death revokes the family.
BEGIN;
SELECT plan(16);

CREATE TEMP TABLE a AS SELECT tests.make_token('3 days') AS token;
CREATE TEMP TABLE b AS
SELECT v.new_token AS token FROM a, auth.validate_and_refresh_api_token(a.token) AS v;

SELECT ok((SELECT token IS NOT NULL FROM b), 'a near-expiry token was rotated');
SELECT results_eq(
    $$ SELECT l.predecessor_hk, l.successor_hk FROM auth.token_rotation_l AS l $$,
    $$ SELECT (tests.bridge(a.token)).api_token_hk, (tests.bridge(b.token)).api_token_hk FROM a, b $$,
    'the rotation is linked predecessor -> successor'
);
SELECT is(
    (SELECT (tests.bridge(b.token)).family_hk = (tests.bridge(a.token)).family_hk FROM a, b), TRUE,
    'successor and predecessor share a family'
);
SELECT results_eq(
    $$ SELECT v.is_valid, v.new_token = b.token, v.refresh_reason::text
       FROM a, b, auth.validate_and_refresh_api_token(a.token) AS v $$,
    $$ VALUES (true, true, 'ALREADY_REFRESHED') $$,
    'before the successor is used, the predecessor is valid and hands out the same successor'
);
SELECT is(
    (SELECT (tests.bridge(a.token)).successor_secret IS NOT NULL
        AND encode((tests.bridge(a.token)).successor_secret, 'hex')
        NOT LIKE '%' || encode(convert_to(b.token, 'UTF8'), 'hex') || '%'
     FROM a, b),
    TRUE, 'the successor is kept encrypted, not in plaintext'
);

-- First use of the successor starts the grace window.
SELECT is((SELECT v.is_valid FROM b, auth.validate_and_refresh_api_token(b.token) AS v), TRUE,
          'the successor validates');
SELECT is(
    (SELECT (tests.bridge(a.token)).valid_until FROM a), now() + interval '60 seconds',
    'the predecessor now lives for the 60 s grace window'
);
SELECT tests.advance_clock('59 seconds');
SELECT is((SELECT v.is_valid FROM a, auth.validate_production_api_token(a.token) AS v), TRUE,
          'the predecessor still works 59 s into its grace');
SELECT tests.advance_clock('2 seconds');
SELECT results_eq(
    $$ SELECT v.is_valid, v.refresh_reason::text FROM a, auth.validate_and_refresh_api_token(a.token) AS v $$,
    $$ VALUES (false, 'REUSE_DETECTED') $$,
    'after the grace the predecessor is refused as reuse'
);
SELECT results_eq(
    $$ SELECT v.is_valid, v.message FROM b, auth.validate_production_api_token(b.token) AS v $$,
    $$ VALUES (false, 'Token has been revoked'::text) $$,
    'reuse revoked the whole family, the successor included'
);
SELECT results_eq(
    $$ SELECT event_type, tokens_revoked FROM auth.security_event $$,
    $$ VALUES ('TOKEN_REUSE', 2) $$,
    'a security event records the reuse'
);
SELECT is(
    (SELECT count(*)::int FROM auth.api_token_bridge WHERE successor_secret IS NOT NULL), 0,
    'no kept successor survives the family'
);

-- A grandparent never gets grace.
CREATE TEMP TABLE g AS SELECT tests.make_token('3 days', 'API') AS t0;
ALTER TABLE g ADD COLUMN t1 text, ADD COLUMN t2 text;
UPDATE g SET t1 = (SELECT v.new_token FROM auth.validate_and_refresh_api_token(g.t0) AS v);
SELECT auth.validate_production_api_token(t1) FROM g;  -- t0 enters its grace
UPDATE g SET t2 = (SELECT r.new_token FROM auth.refresh_production_token_enhanced(g.t1, 7, TRUE) AS r);
SELECT results_eq(
    $$ SELECT v.is_valid FROM g, auth.validate_production_api_token(g.t1) AS v $$,
    $$ VALUES (true) $$,
    'the immediate predecessor stays valid until its successor is used'
);
SELECT results_eq(
    $$ SELECT v.is_valid FROM g, auth.validate_production_api_token(g.t0) AS v $$,
    $$ VALUES (false) $$,
    'the grandparent died when its grandchild was issued, inside its own grace window'
);

-- Grace never outlives the predecessor's own expiry.
CREATE TEMP TABLE s AS SELECT tests.make_token('30 seconds', 'API') AS p;
ALTER TABLE s ADD COLUMN n text;
UPDATE s SET n = (SELECT v.new_token FROM auth.validate_and_refresh_api_token(s.p) AS v);
SELECT auth.validate_production_api_token(n) FROM s;
SELECT is(
    (SELECT (tests.bridge(s.p)).valid_until = (tests.bridge(s.p)).expires_at FROM s), TRUE,
    'a predecessor with 30 s left keeps its own expiry as the end of grace'
);

-- With reuse_action REJECT the token is refused but the family lives.
SELECT auth.set_refresh_policy('API_KEY', p_strategy => 'ROTATE', p_reuse_action => 'REJECT');
CREATE TEMP TABLE r AS SELECT tests.make_token('3 days', 'API_KEY') AS p;
ALTER TABLE r ADD COLUMN n text;
UPDATE r SET n = (SELECT v.new_token FROM auth.validate_and_refresh_api_token(r.p) AS v);
SELECT auth.validate_production_api_token(n) FROM r;
SELECT tests.advance_clock('61 seconds');
SELECT results_eq(
    $$ SELECT (SELECT v.is_valid FROM auth.validate_production_api_token(r.p) AS v),
              (SELECT v.is_valid FROM auth.validate_production_api_token(r.n) AS v)
       FROM r $$,
    $$ VALUES (false, true) $$,
    'REJECT refuses the reused token and leaves the family alone'
);

SELECT * FROM finish();
ROLLBACK;
