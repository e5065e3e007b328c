'use strict';

// credentialsRequired: false and .unless() (express-jwt's options, express-unless's
// semantics), against a real database and a real HTTP server.

const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const http = require('node:http');
const express = require('express');

const { createTokenMiddleware } = require('..');
const h = require('../test-support/db');

// A request with the path sent exactly as given (fetch would normalize `/x/../public`).
function rawRequest(base, method, path, headers = {}) {
  const { hostname, port } = new URL(base);
  return new Promise((resolve, reject) => {
    const req = http.request({ hostname, port, method, path, headers }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (chunk) => { body += chunk; });
      res.on('end', () => resolve({ status: res.statusCode, headers: res.headers, body }));
    });
    req.on('error', reject);
    req.end();
  });
}

const whoami = (req, res) => res.json({ auth: req.auth || null, pyvault: req.pyvault || null });
function errorHandler(err, req, res, next) { // eslint-disable-line no-unused-vars
  res.status(err.status || 500).json({ code: err.code || 'other', message: err.message });
}

describe('credentialsRequired: false', () => {
  let pool;
  let counted;
  let owner;
  let server;

  before(async () => {
    pool = h.newPool();
    counted = h.countingPool(pool);
    owner = await h.makeUser(pool, 'node-optional', 'olga');
    const auth = createTokenMiddleware({ pool: counted, credentialsRequired: false, logger: null });
    const app = express();
    app.get('/maybe', auth, whoami);
    app.post('/write', auth, auth.requireScope('api:write'), whoami);
    app.get('/scoped', auth.requireScope('api:read'), whoami);
    app.use(errorHandler);
    server = await h.startServer(app);
  });

  after(async () => {
    await server.close();
    await pool.end();
  });

  it('lets a request without a token through unauthenticated, with no query', async () => {
    const before = counted.count;
    for (const headers of [{}, { Authorization: 'Basic dXNlcjpwYXNz' }]) {
      const res = await fetch(`${server.url}/maybe`, { headers });
      assert.equal(res.status, 200);
      assert.deepEqual(await res.json(), { auth: null, pyvault: null });
    }
    assert.equal(counted.count, before, 'no database query for an anonymous request');
  });

  it('still authenticates a valid token', async () => {
    const token = await h.issueToken(pool, owner, { expiresIn: '30 days' });
    const res = await fetch(`${server.url}/maybe`, { headers: { Authorization: `Bearer ${token}` } });
    assert.equal(res.status, 200);
    const body = await res.json();
    assert.equal(body.auth.userHk, owner.userHk.toString('hex'));
    assert.deepEqual(body.auth, body.pyvault);
  });

  it('still refuses a bad token', async () => {
    const revoked = await h.issueToken(pool, owner, { expiresIn: '30 days' });
    await h.revokeToken(pool, revoked);
    for (const value of ['Bearer', 'Bearer nope', `Bearer ovt_prod_${'ab'.repeat(32)}`, `Bearer ${revoked}`]) {
      const res = await fetch(`${server.url}/maybe`, { headers: { Authorization: value } });
      assert.equal(res.status, 401, value.slice(0, 20));
      assert.equal((await res.json()).code, 'invalid_token');
    }
  });

  it('requireScope always needs a token: an anonymous request gets 401', async () => {
    for (const path of ['/scoped']) {
      const res = await fetch(`${server.url}${path}`);
      assert.equal(res.status, 401);
      assert.deepEqual(await res.json(), { code: 'credentials_required', message: 'No authorization token was found' });
    }
    const write = await fetch(`${server.url}/write`, { method: 'POST' });
    assert.equal(write.status, 401);
    assert.equal((await write.json()).code, 'credentials_required');
  });
});

describe('.unless()', () => {
  let pool;
  let counted;
  let owner;
  let token;
  let server;
  let mounted;

  before(async () => {
    pool = h.newPool();
    counted = h.countingPool(pool);
    owner = await h.makeUser(pool, 'node-unless', 'uma');
    token = await h.issueToken(pool, owner, { expiresIn: '30 days', scope: ['api:read'] });
    const auth = createTokenMiddleware({ pool: counted, logger: null });
    const app = express();
    app.use(
      auth
        .unless({
          path: ['/public', /^\/static\//, { url: '/items', method: 'GET' }, { url: /^\/feed/, methods: ['GET', 'HEAD'] }],
          ext: ['.css'],
          method: 'OPTIONS',
        })
        .unless((req) => req.headers['x-skip'] === 'sync')
        .unless({ custom: async (req) => req.headers['x-skip'] === 'async' }),
    );
    app.all('/{*rest}', whoami);
    app.use(errorHandler);
    server = await h.startServer(app);

    // Mounted under /api: paths are the original URL by default, the mount-relative
    // one with useOriginalUrl: false. requireScope gets unless() too.
    const api = express.Router();
    api.get('/health', auth.unless({ path: '/api/health' }), whoami);
    api.get('/ping', auth.unless({ path: '/ping', useOriginalUrl: false }), whoami);
    api.get('/rel', auth.unless({ path: '/rel' }), whoami);
    api.all('/write', auth.requireScope('api:write').unless({ method: 'GET' }), whoami);
    api.get('/boom', auth.unless(() => { throw new Error('custom failed'); }), whoami);
    const outer = express();
    outer.use('/api', api);
    outer.use(errorHandler);
    mounted = await h.startServer(outer);
  });

  after(async () => {
    await server.close();
    await mounted.close();
    await pool.end();
  });

  const status = async (base, method, path, headers) => (await rawRequest(base, method, path, headers)).status;

  it('skips the paths, methods and extensions it names, and no query is sent for them', async () => {
    const before = counted.count;
    for (const [method, path] of [
      ['GET', '/public'], ['GET', '/public?next=/private'], ['GET', '/static/app.js'], ['GET', '/items'],
      ['GET', '/feed/rss'], ['HEAD', '/feed'], ['GET', '/theme.css'], ['OPTIONS', '/private'], ['POST', '/public'],
    ]) {
      const res = await rawRequest(server.url, method, path);
      assert.equal(res.status, 200, `${method} ${path} is skipped`);
      if (method !== 'HEAD') assert.deepEqual(JSON.parse(res.body), { auth: null, pyvault: null });
    }
    assert.equal(counted.count, before);
  });

  it('guards everything else', async () => {
    for (const [method, path] of [
      ['GET', '/private'], ['POST', '/items'], ['POST', '/feed'], ['GET', '/public/more'], ['GET', '/publicity'],
      ['GET', '/theme.css.map'], ['GET', '/x/static/y'], ['GET', '/PUBLIC'],
    ]) {
      assert.equal(await status(server.url, method, path), 401, `${method} ${path} needs a token`);
    }
    const ok = await rawRequest(server.url, 'GET', '/private', { Authorization: `Bearer ${token}` });
    assert.equal(ok.status, 200);
    assert.equal(JSON.parse(ok.body).auth.userHk, owner.userHk.toString('hex'));
  });

  it('matches the raw path: no dot-segment normalization, no decoding', async () => {
    // The router sees '/x/../public' as it is, so the skip must not read it as '/public'.
    assert.equal(await status(server.url, 'GET', '/x/../public'), 401);
    assert.equal(await status(server.url, 'GET', '/%70ublic'), 401);
    assert.equal(await status(server.url, 'GET', '/public#frag'), 200);
  });

  it('custom functions, sync and async, chained', async () => {
    assert.equal(await status(server.url, 'GET', '/private', { 'x-skip': 'sync' }), 200);
    assert.equal(await status(server.url, 'GET', '/private', { 'x-skip': 'async' }), 200);
    assert.equal(await status(server.url, 'GET', '/private', { 'x-skip': 'other' }), 401);
  });

  it('a custom function that throws goes to next(err)', async () => {
    const res = await rawRequest(mounted.url, 'GET', '/api/boom');
    assert.equal(res.status, 500);
    assert.deepEqual(JSON.parse(res.body), { code: 'other', message: 'custom failed' });
  });

  it('compares the original URL unless useOriginalUrl is false', async () => {
    assert.equal(await status(mounted.url, 'GET', '/api/health'), 200);
    assert.equal(await status(mounted.url, 'GET', '/api/ping'), 200);
    assert.equal(await status(mounted.url, 'GET', '/api/rel'), 401, "'/rel' is not the original URL");
  });

  it('is there on requireScope too', async () => {
    assert.equal(await status(mounted.url, 'GET', '/api/write'), 200);
    assert.equal(await status(mounted.url, 'POST', '/api/write', { Authorization: `Bearer ${token}` }), 403);
  });

  it('refuses options it cannot use', () => {
    const auth = createTokenMiddleware({ pool: counted, logger: null });
    assert.throws(() => auth.unless(), TypeError);
    assert.throws(() => auth.unless('/public'), TypeError);
    assert.throws(() => auth.unless({ custom: true }), TypeError);
  });
});
