'use strict';

// End-to-end tests of the Express middleware against a real database (DATABASE_URL)
// and a real HTTP server on 127.0.0.1. These use `respond: true`, the built-in answers
// (which the Python middleware gives byte for byte); errors.test.js covers next(err).

const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const express = require('express');
const { Pool } = require('pg');

const { createTokenMiddleware } = require('..');
const h = require('../test-support/db');

const INVALID_BODY = '{"error":"invalid_token"}';
const INVALID_CHALLENGE = 'Bearer error="invalid_token"';

function buildApp(middleware) {
  const app = express();
  app.get('/whoami', middleware, (req, res) => res.json(req.pyvault));
  app.get('/cached', middleware, (req, res) => {
    res.set('Cache-Control', 'public, max-age=600');
    res.json({ ok: true });
  });
  app.post('/write', middleware, middleware.requireScope('api:write'), (req, res) => res.json({ wrote: true }));
  app.get('/admin', middleware.requireScope('api:admin'), (req, res) => res.json({ admin: true }));
  return app;
}

const get = (url, token, init = {}) =>
  fetch(url, { ...init, headers: token === undefined ? {} : { Authorization: `Bearer ${token}` } });

describe('createTokenMiddleware', () => {
  let pool;
  let counted;
  let owner;
  let server;
  let explainServer;
  const capture = h.captureLogger();
  const seenTokens = new Set(); // every whole token, for the log check at the end

  const issue = async (opts) => {
    const token = await h.issueToken(pool, owner, opts);
    seenTokens.add(token);
    return token;
  };
  const remember = (response) => {
    const t = response.headers.get('x-new-token');
    if (t) seenTokens.add(t);
    return response;
  };

  before(async () => {
    pool = h.newPool();
    counted = h.countingPool(pool);
    owner = await h.makeUser(pool, 'node-middleware', 'alice');
    server = await h.startServer(buildApp(createTokenMiddleware({ pool: counted, respond: true, logger: capture.logger })));
    explainServer = await h.startServer(
      buildApp(createTokenMiddleware({ pool, respond: true, explainErrors: true, logger: capture.logger })),
    );
  });

  after(async () => {
    await server.close();
    await explainServer.close();
    await pool.end();
  });

  it('lets a valid token through and sets req.pyvault', async () => {
    const token = await issue({ expiresIn: '30 days' });
    const res = remember(await get(`${server.url}/whoami`, token));
    assert.equal(res.status, 200);
    const body = await res.json();
    assert.equal(body.userHk, owner.userHk.toString('hex'));
    assert.equal(body.tenantHk, owner.tenantHk.toString('hex'));
    assert.match(body.userHk, /^[0-9a-f]{64}$/);
    assert.deepEqual(body.scope, ['api:read']);
    const days = (Date.parse(body.expiresAt) - Date.now()) / 86400e3;
    assert.ok(days > 29.9 && days <= 30, `expiresAt is 30 days ahead, got ${days}`);
    assert.equal(res.headers.get('x-new-token'), null, 'a token far from expiry is not refreshed');
    assert.equal(res.headers.get('x-token-expires'), null);
    assert.equal(res.headers.get('x-refresh-reason'), null);
  });

  it('rotates a token within the refresh threshold and says so in the headers', async () => {
    const token = await issue({ expiresIn: '3 days' });
    const res = remember(await get(`${server.url}/whoami`, token));
    assert.equal(res.status, 200);
    const newToken = res.headers.get('x-new-token');
    assert.match(newToken, /^ovt_prod_[0-9a-f]{64}$/);
    assert.notEqual(newToken, token);
    assert.equal(res.headers.get('x-refresh-reason'), 'EXPIRING_SOON');
    assert.equal(res.headers.get('cache-control'), 'no-store');
    const expires = res.headers.get('x-token-expires');
    assert.match(expires, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$/, 'RFC 3339 timestamp');
    const days = (Date.parse(expires) - Date.now()) / 86400e3;
    assert.ok(days > 29.9 && days <= 30, `the new token lives 30 days, got ${days}`);

    // The new token works and needs no refresh; the old one still works (grace) and
    // hands out the same successor again.
    const next = remember(await get(`${server.url}/whoami`, newToken));
    assert.equal(next.status, 200);
    assert.equal(next.headers.get('x-new-token'), null);
    const again = remember(await get(`${server.url}/whoami`, token));
    assert.equal(again.status, 200);
    assert.equal(again.headers.get('x-new-token'), newToken);
    assert.equal(again.headers.get('x-refresh-reason'), 'ALREADY_REFRESHED');
  });

  it('keeps Cache-Control: no-store on a response with X-New-Token even when the handler sets its own', async () => {
    const fresh = await issue({ expiresIn: '30 days' });
    const plain = await get(`${server.url}/cached`, fresh);
    assert.equal(plain.headers.get('cache-control'), 'public, max-age=600', 'untouched without a new token');

    const token = await issue({ expiresIn: '3 days' });
    const res = remember(await get(`${server.url}/cached`, token));
    assert.equal(res.status, 200);
    assert.ok(res.headers.get('x-new-token'));
    assert.equal(res.headers.get('cache-control'), 'no-store');
  });

  it('answers unknown, expired, revoked and malformed tokens with byte-identical 401s', async () => {
    const unknown = `ovt_prod_${'ab'.repeat(32)}`;
    const expired = await issue({ expiresIn: '1 second' });
    const revoked = await issue({ expiresIn: '30 days' });
    assert.equal(await h.revokeToken(pool, revoked), true);
    const malformed = [
      'not-a-token',
      `ovt_prod_${'ab'.repeat(31)}`, // too short
      `ovt_prod_${'ab'.repeat(33)}`, // too long
      `ovt_test_${'ab'.repeat(32)}`, // wrong prefix
      `ovt_prod_${'AB'.repeat(32)}`, // not lower-case hex
      `ovt_prod_${'é'.repeat(64)}`, // not ASCII
      '',
    ];
    await h.sleep(1500); // let the one-second token expire

    const cases = { unknown, expired, revoked, ...Object.fromEntries(malformed.map((m, i) => [`malformed${i}`, m])) };
    const answers = {};
    for (const [name, token] of Object.entries(cases)) {
      // fetch sends header values as Latin-1 bytes, so the 'é' case arrives as non-ASCII.
      const res = await get(`${server.url}/whoami`, token);
      answers[name] = {
        status: res.status,
        body: Buffer.from(await res.arrayBuffer()),
        challenge: res.headers.get('www-authenticate'),
        contentType: res.headers.get('content-type'),
      };
    }
    for (const [name, a] of Object.entries(answers)) {
      assert.equal(a.status, 401, `${name}: status`);
      assert.equal(a.body.toString('utf8'), INVALID_BODY, `${name}: body`);
      assert.equal(a.challenge, INVALID_CHALLENGE, `${name}: WWW-Authenticate`);
      assert.equal(a.contentType, 'application/json; charset=utf-8', `${name}: content type`);
    }
    const reference = answers.unknown.body;
    for (const [name, a] of Object.entries(answers)) {
      assert.ok(a.body.equals(reference), `${name}: body bytes equal the unknown token's`);
    }
  });

  it('rejects malformed tokens without any database query', async () => {
    const before = counted.count;
    for (const token of ['x', `ovt_prod_${'0'.repeat(63)}`, `ovt_prod_${'g'.repeat(64)}`, `Ovt_prod_${'0'.repeat(64)}`]) {
      const res = await get(`${server.url}/whoami`, token);
      assert.equal(res.status, 401);
      assert.equal(await res.text(), INVALID_BODY);
    }
    const empty = await fetch(`${server.url}/whoami`, { headers: { Authorization: 'Bearer' } });
    assert.equal(empty.status, 401);
    assert.equal(await empty.text(), INVALID_BODY);
    assert.equal(counted.count, before, 'no query was sent for a malformed token');

    // Control: a well-formed token does cost one query.
    await get(`${server.url}/whoami`, `ovt_prod_${'0'.repeat(64)}`);
    assert.equal(counted.count, before + 1);
  });

  it('challenges a request without credentials without an error code', async () => {
    for (const headers of [{}, { Authorization: 'Basic dXNlcjpwYXNz' }]) {
      const res = await fetch(`${server.url}/whoami`, { headers });
      assert.equal(res.status, 401);
      assert.equal(res.headers.get('www-authenticate'), 'Bearer');
      assert.equal(await res.text(), '{"error":"unauthorized"}');
    }
  });

  it('refuses a token without the required scope with 403 insufficient_scope', async () => {
    const token = await issue({ expiresIn: '30 days', scope: ['api:read'] });
    const res = await get(`${server.url}/admin`, token);
    assert.equal(res.status, 403);
    assert.equal(await res.text(), '{"error":"insufficient_scope"}');
    assert.equal(res.headers.get('www-authenticate'), 'Bearer error="insufficient_scope", scope="api:admin"');

    // requireScope after the main middleware decides from req.pyvault: no second query.
    const before = counted.count;
    const write = await fetch(`${server.url}/write`, { method: 'POST', headers: { Authorization: `Bearer ${token}` } });
    assert.equal(write.status, 403);
    assert.equal(write.headers.get('www-authenticate'), 'Bearer error="insufficient_scope", scope="api:write"');
    assert.equal(counted.count, before + 1);

    const writer = await issue({ expiresIn: '30 days', scope: ['api:read', 'api:write'] });
    const ok = await fetch(`${server.url}/write`, { method: 'POST', headers: { Authorization: `Bearer ${writer}` } });
    assert.equal(ok.status, 200);
    assert.deepEqual(await ok.json(), { wrote: true });
  });

  it('explains refusals in the body only when configured to', async () => {
    const revoked = await issue({ expiresIn: '30 days' });
    await h.revokeToken(pool, revoked);
    const res = await get(`${explainServer.url}/whoami`, revoked);
    assert.equal(res.status, 401);
    assert.equal(res.headers.get('www-authenticate'), INVALID_CHALLENGE);
    assert.deepEqual(await res.json(), {
      error: 'invalid_token',
      reason: 'TOKEN_INVALID',
      message: 'Token has been revoked',
    });
    const malformed = await get(`${explainServer.url}/whoami`, 'nope');
    assert.deepEqual(await malformed.json(), {
      error: 'invalid_token',
      reason: 'TOKEN_INVALID',
      message: 'Token format is invalid',
    });
  });

  it('answers 503 with Retry-After when the database is unreachable', async () => {
    const port = await h.closedPort();
    const downPool = new Pool({ host: '127.0.0.1', port, user: 'nobody', database: 'nothing', connectionTimeoutMillis: 2000 });
    downPool.on('error', () => {});
    const down = await h.startServer(buildApp(createTokenMiddleware({ pool: downPool, respond: true, logger: capture.logger })));
    try {
      const token = await issue({ expiresIn: '30 days' });
      const res = await get(`${down.url}/whoami`, token);
      assert.equal(res.status, 503);
      assert.equal(res.headers.get('retry-after'), '5');
      assert.equal(await res.text(), '{"error":"temporarily_unavailable"}');
    } finally {
      await down.close();
      await downPool.end();
    }
  });

  it('answers 503, not 500, when the query fails, and redacts tokens from the logged error', async () => {
    const token = await issue({ expiresIn: '30 days' });
    const failing = {
      query: async () => {
        throw Object.assign(new Error(`function failed for ${token}`), { code: 'XX000' });
      },
    };
    const app = buildApp(createTokenMiddleware({ pool: failing, respond: true, logger: capture.logger }));
    const broken = await h.startServer(app);
    try {
      const res = await get(`${broken.url}/whoami`, token);
      assert.equal(res.status, 503);
      assert.equal(res.headers.get('retry-after'), '5');
      const body = await res.text();
      assert.equal(body, '{"error":"temporarily_unavailable"}');
      assert.ok(capture.lines.some((l) => l.includes('XX000')), 'the failure was logged');
    } finally {
      await broken.close();
    }
  });

  it('uses the same 401 for a reused rotated token, and the reuse revokes the family', async () => {
    // A token type of its own with no grace window, so reuse shows at once.
    const old = await pool.query(`SELECT grace_period::text AS g FROM auth.token_refresh_policy WHERE token_type = 'API'`);
    await pool.query(`SELECT auth.set_refresh_policy('API', p_grace_period => '0 seconds')`);
    try {
      const first = await issue({ expiresIn: '3 days', type: 'API' });
      const rotated = remember(await get(`${server.url}/whoami`, first));
      const second = rotated.headers.get('x-new-token');
      assert.ok(second);
      assert.equal((await get(`${server.url}/whoami`, second)).status, 200, 'first use of the successor');
      const reuse = await get(`${server.url}/whoami`, first);
      assert.equal(reuse.status, 401);
      assert.equal(await reuse.text(), INVALID_BODY);
      assert.equal(reuse.headers.get('www-authenticate'), INVALID_CHALLENGE);
      const after = await get(`${server.url}/whoami`, second);
      assert.equal(after.status, 401, 'reuse revoked the whole family');
      assert.equal(await after.text(), INVALID_BODY);
    } finally {
      await pool.query(`SELECT auth.set_refresh_policy('API', p_grace_period => $1::interval)`, [old.rows[0].g]);
    }
  });

  it('never logs a whole token', () => {
    assert.ok(capture.lines.length > 0, 'something was logged');
    assert.ok(seenTokens.size > 5);
    assert.ok(
      capture.lines.some((l) => l.includes('token refreshed') && /ovt_prod_[0-9a-f]{4}\u2026/.test(l)),
      'refreshes are logged with a token prefix',
    );
    for (const line of capture.lines) {
      for (const token of seenTokens) {
        assert.ok(!line.includes(token), `a log line holds a whole token: ${line.slice(0, 80)}`);
        assert.ok(!line.includes(token.slice(9)), 'a log line holds a token secret');
      }
      assert.doesNotMatch(line, /[0-9a-f]{20}/, 'no long hex run (a token body) in a log line');
    }
  });
});
