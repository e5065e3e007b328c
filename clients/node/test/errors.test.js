'use strict';

// Refusals as error objects: by default the middleware calls next(err) with an error
// shaped like express-jwt's UnauthorizedError and carrying the RFC 6750 challenge, so the
// application's error handler decides. Real database, real HTTP server.

const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const express = require('express');
const { Pool } = require('pg');

const {
  createTokenMiddleware, TokenError, UnauthorizedError, ForbiddenError, ServiceUnavailableError,
} = require('..');
const h = require('../test-support/db');

const bearer = (token) => ({ headers: { Authorization: `Bearer ${token}` } });

// An app whose error handler keeps every error it gets and answers with its fields.
function capturingApp(middleware, seen) {
  const app = express();
  app.get('/whoami', middleware, (req, res) => res.json({ auth: req.auth, same: req.auth === req.pyvault }));
  app.get('/admin', middleware, middleware.requireScope('api:admin'), (req, res) => res.json({ admin: true }));
  app.get('/only-admin', middleware.requireScope('api:admin'), (req, res) => res.json({ admin: true }));
  app.use((err, req, res, next) => { // eslint-disable-line no-unused-vars
    seen.push(err);
    res.status(err.status || 500).set(err.headers || {}).json({ handled: err.code || 'other' });
  });
  return app;
}

describe('refusals go to next(err) by default', () => {
  let pool;
  let owner;
  let server;
  let plainServer;
  const seen = [];

  before(async () => {
    pool = h.newPool();
    owner = await h.makeUser(pool, 'node-errors', 'erin');
    server = await h.startServer(capturingApp(createTokenMiddleware({ pool, logger: null }), seen));
    // No error handler of its own: Express's default one answers.
    const plain = express();
    plain.set('env', 'test'); // the default handler then does not print each error
    plain.get('/whoami', createTokenMiddleware({ pool, logger: null }), (req, res) => res.json({}));
    plainServer = await h.startServer(plain);
  });

  after(async () => {
    await server.close();
    await plainServer.close();
    await pool.end();
  });

  const lastError = async (response, expectedStatus) => {
    assert.equal(response.status, expectedStatus);
    const body = await response.json();
    const err = seen.at(-1);
    assert.equal(body.handled, err.code, 'the error handler answered');
    return err;
  };

  it('sets req.auth (express-jwt) and req.pyvault to the same identity', async () => {
    const token = await h.issueToken(pool, owner, { expiresIn: '30 days', scope: ['api:read'] });
    const res = await fetch(`${server.url}/whoami`, bearer(token));
    assert.equal(res.status, 200);
    const body = await res.json();
    assert.equal(body.same, true);
    assert.equal(body.auth.userHk, owner.userHk.toString('hex'));
    assert.equal(body.auth.tenantHk, owner.tenantHk.toString('hex'));
    assert.deepEqual(body.auth.scope, ['api:read']);
    assert.equal(body.auth.refreshReason, 'NO_REFRESH_NEEDED');
  });

  it('a request without credentials: 401 credentials_required, challenge without an error code', async () => {
    const before = seen.length;
    for (const init of [{}, { headers: { Authorization: 'Basic dXNlcjpwYXNz' } }]) {
      const err = await lastError(await fetch(`${server.url}/whoami`, init), 401);
      assert.ok(err instanceof UnauthorizedError && err instanceof TokenError && err instanceof Error);
      assert.equal(err.name, 'UnauthorizedError');
      assert.equal(err.status, 401);
      assert.equal(err.statusCode, 401);
      assert.equal(err.code, 'credentials_required');
      assert.equal(err.message, 'No authorization token was found');
      assert.deepEqual(err.inner, { message: 'No authorization token was found' });
      assert.equal(err.challenge, 'Bearer');
      assert.deepEqual(err.headers, { 'WWW-Authenticate': 'Bearer', 'Cache-Control': 'no-store' });
      assert.equal(err.expose, true);
    }
    assert.equal(seen.length, before + 2);
  });

  it('malformed, unknown and revoked tokens: 401 invalid_token with the reason', async () => {
    const revoked = await h.issueToken(pool, owner, { expiresIn: '30 days' });
    await h.revokeToken(pool, revoked);
    const cases = [
      ['nope', 'TOKEN_INVALID', 'Token format is invalid'],
      ['', 'TOKEN_INVALID', 'Token format is invalid'],
      [`ovt_prod_${'ab'.repeat(32)}`, 'TOKEN_INVALID', 'Token not found'],
      [revoked, 'TOKEN_INVALID', 'Token has been revoked'],
    ];
    for (const [token, reason, message] of cases) {
      const err = await lastError(await fetch(`${server.url}/whoami`, bearer(token)), 401);
      assert.ok(err instanceof UnauthorizedError);
      assert.equal(err.name, 'UnauthorizedError');
      assert.equal(err.code, 'invalid_token');
      assert.equal(err.reason, reason);
      assert.equal(err.message, message);
      assert.equal(err.challenge, 'Bearer error="invalid_token"');
      assert.deepEqual(err.headers, { 'WWW-Authenticate': 'Bearer error="invalid_token"', 'Cache-Control': 'no-store' });
      assert.ok(!JSON.stringify(err).includes(revoked), 'the error does not carry the token');
    }
  });

  it('a missing scope: 403 insufficient_scope, from the database or from req.pyvault', async () => {
    const token = await h.issueToken(pool, owner, { expiresIn: '30 days', scope: ['api:read'] });
    for (const path of ['/only-admin', '/admin']) {
      const res = await fetch(`${server.url}${path}`, bearer(token));
      assert.equal(res.headers.get('www-authenticate'), 'Bearer error="insufficient_scope", scope="api:admin"');
      const err = await lastError(res, 403);
      assert.ok(err instanceof ForbiddenError && err instanceof TokenError);
      assert.equal(err.name, 'ForbiddenError');
      assert.equal(err.code, 'insufficient_scope');
      assert.equal(err.reason, 'INSUFFICIENT_SCOPE');
      assert.equal(err.scope, 'api:admin');
      assert.equal(err.message, 'Token lacks the required scope');
      assert.equal(err.challenge, 'Bearer error="insufficient_scope", scope="api:admin"');
      assert.equal(err.expose, true);
    }
  });

  it('an unreachable database: 503 temporarily_unavailable with Retry-After and the cause as inner', async () => {
    const port = await h.closedPort();
    const downPool = new Pool({ host: '127.0.0.1', port, user: 'nobody', database: 'nothing', connectionTimeoutMillis: 2000 });
    downPool.on('error', () => {});
    const errs = [];
    const down = await h.startServer(capturingApp(createTokenMiddleware({ pool: downPool, logger: null }), errs));
    try {
      const token = await h.issueToken(pool, owner, { expiresIn: '30 days' });
      const res = await fetch(`${down.url}/whoami`, bearer(token));
      assert.equal(res.status, 503);
      assert.equal(res.headers.get('retry-after'), '5');
      const [err] = errs;
      assert.ok(err instanceof ServiceUnavailableError && err instanceof TokenError);
      assert.equal(err.name, 'ServiceUnavailableError');
      assert.equal(err.status, 503);
      assert.equal(err.code, 'temporarily_unavailable');
      assert.equal(err.message, 'Token validation is unavailable');
      assert.equal(err.inner.code, 'ECONNREFUSED', 'inner is the database error');
      assert.equal(err.challenge, null);
      assert.deepEqual(err.headers, { 'Retry-After': '5', 'Cache-Control': 'no-store' });
      assert.equal(err.expose, false);
    } finally {
      await down.close();
      await downPool.end();
    }
  });

  it("Express's own error handler sends the status and the challenge from the error", async () => {
    const none = await fetch(`${plainServer.url}/whoami`);
    assert.equal(none.status, 401);
    assert.equal(none.headers.get('www-authenticate'), 'Bearer');
    assert.equal(none.headers.get('cache-control'), 'no-store');
    const bad = await fetch(`${plainServer.url}/whoami`, bearer(`ovt_prod_${'ef'.repeat(32)}`));
    assert.equal(bad.status, 401);
    assert.equal(bad.headers.get('www-authenticate'), 'Bearer error="invalid_token"');
  });

  it('with respond: true answers itself and never calls the error handler', async () => {
    const errs = [];
    const own = await h.startServer(capturingApp(createTokenMiddleware({ pool, respond: true, logger: null }), errs));
    try {
      const res = await fetch(`${own.url}/whoami`, bearer('nope'));
      assert.equal(res.status, 401);
      assert.equal(await res.text(), '{"error":"invalid_token"}');
      const none = await fetch(`${own.url}/whoami`);
      assert.equal(await none.text(), '{"error":"unauthorized"}');
      assert.deepEqual(errs, []);
    } finally {
      await own.close();
    }
  });
});
