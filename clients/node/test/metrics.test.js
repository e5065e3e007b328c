'use strict';

// Prometheus metrics through prom-client (a devDependency here, an optional peer
// dependency for users): outcomes counted, validation time observed, real database.

const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const path = require('node:path');
const { execFile } = require('node:child_process');
const express = require('express');
const { Registry } = require('prom-client');

const { createTokenMiddleware } = require('..');
const h = require('../test-support/db');

const bearer = (token) => ({ headers: { Authorization: `Bearer ${token}` } });

async function outcomes(registry) {
  const metric = await registry.getSingleMetric('pyvault_requests_total').get();
  return Object.fromEntries(metric.values.map((v) => [v.labels.outcome, v.value]));
}

async function histogram(registry) {
  const metric = await registry.getSingleMetric('pyvault_validation_seconds').get();
  const count = metric.values.find((v) => v.metricName === 'pyvault_validation_seconds_count').value;
  const sum = metric.values.find((v) => v.metricName === 'pyvault_validation_seconds_sum').value;
  const buckets = metric.values.filter((v) => v.metricName === 'pyvault_validation_seconds_bucket');
  return { type: metric.type, count, sum, buckets };
}

describe('metrics', () => {
  let pool;
  let owner;
  let registry;
  let server;
  let broken;

  before(async () => {
    pool = h.newPool();
    owner = await h.makeUser(pool, 'node-metrics', 'max');
    registry = new Registry();
    const auth = createTokenMiddleware({ pool, registry, respond: true, logger: null });
    const app = express();
    app.get('/whoami', auth, (req, res) => res.json({}));
    app.get('/admin', auth, auth.requireScope('api:admin'), (req, res) => res.json({}));
    app.get('/skipped', auth.unless({ path: '/skipped' }), (req, res) => res.json({}));
    const optional = createTokenMiddleware({ pool, registry, credentialsRequired: false, respond: true, logger: null });
    app.get('/optional', optional, (req, res) => res.json({}));
    server = await h.startServer(app);
    // A second middleware on the same registry shares the metrics.
    const failing = { query: async () => { throw Object.assign(new Error('down'), { code: '57P01' }); } };
    const b = express();
    b.get('/whoami', createTokenMiddleware({ pool: failing, registry, respond: true, logger: null }), (req, res) => res.json({}));
    broken = await h.startServer(b);
  });

  after(async () => {
    await server.close();
    await broken.close();
    await pool.end();
  });

  it('exports every outcome at zero before the first request', async () => {
    const fresh = new Registry();
    createTokenMiddleware({ pool, registry: fresh, logger: null });
    assert.deepEqual(await outcomes(fresh), { ok: 0, refreshed: 0, 401: 0, 403: 0, 503: 0, anonymous: 0 });
    const text = await fresh.metrics();
    assert.match(text, /^# TYPE pyvault_requests_total counter$/m);
    assert.match(text, /^# TYPE pyvault_validation_seconds histogram$/m);
    assert.match(text, /^pyvault_validation_seconds_count 0$/m);
  });

  it('counts each outcome and times each database validation', async () => {
    const valid = await h.issueToken(pool, owner, { expiresIn: '30 days' });
    const expiring = await h.issueToken(pool, owner, { expiresIn: '3 days' });
    const answers = [];
    const call = async (base, p, init) => answers.push((await fetch(`${base}${p}`, init)).status);
    await call(server.url, '/whoami', bearer(valid)); // ok (1 query)
    await call(server.url, '/whoami', bearer(valid)); // ok (1 query)
    await call(server.url, '/whoami', bearer(expiring)); // refreshed (1 query)
    await call(server.url, '/whoami', {}); // 401, no query
    await call(server.url, '/whoami', bearer('nope')); // 401, no query
    await call(server.url, '/whoami', bearer(`ovt_prod_${'ab'.repeat(32)}`)); // 401 (1 query)
    await call(server.url, '/admin', bearer(valid)); // ok, then 403 from req.pyvault (1 query)
    await call(broken.url, '/whoami', bearer(valid)); // 503 (1 failed query)
    await call(server.url, '/optional', {}); // anonymous, no query
    await call(server.url, '/optional', bearer('nope')); // 401, no query
    await call(server.url, '/skipped', {}); // skipped by unless(): not counted
    assert.deepEqual(answers, [200, 200, 200, 401, 401, 401, 403, 503, 200, 401, 200]);

    assert.deepEqual(await outcomes(registry), { ok: 3, refreshed: 1, 401: 4, 403: 1, 503: 1, anonymous: 1 });
    const hist = await histogram(registry);
    assert.equal(hist.type, 'histogram');
    assert.equal(hist.count, 6, 'one observation per database validation, failed ones included');
    assert.ok(hist.sum > 0 && hist.sum < 30, `seconds, not milliseconds: ${hist.sum}`);
    const les = hist.buckets.map((b) => b.labels.le);
    assert.deepEqual(les, [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, '+Inf']);
    assert.equal(hist.buckets.at(-1).value, 6);

    const text = await registry.metrics();
    assert.match(text, /^pyvault_requests_total\{outcome="ok"\} 3$/m);
    assert.match(text, /^pyvault_requests_total\{outcome="503"\} 1$/m);
    assert.match(text, /^pyvault_validation_seconds_bucket\{le="\+Inf"\} 6$/m);
  });

  it('refuses a registry option that is not a prom-client Registry', () => {
    assert.throws(() => createTokenMiddleware({ pool, registry: {} }), /prom-client Registry/);
  });

  it('works without prom-client installed, and says what is missing when a registry is given', async () => {
    const token = await h.issueToken(pool, owner, { expiresIn: '30 days' });
    // A child process in which require('prom-client') fails as if it were not installed.
    const script = `
      const Module = require('node:module');
      const load = Module._load;
      Module._load = function (request, ...rest) {
        if (request === 'prom-client') throw Object.assign(new Error('missing'), { code: 'MODULE_NOT_FOUND' });
        return load.call(this, request, ...rest);
      };
      const express = require('express');
      const { Pool } = require('pg');
      const { createTokenMiddleware } = require('.');
      (async () => {
        const pool = new Pool({ connectionString: process.env.DATABASE_URL, max: 1 });
        let refused;
        try { createTokenMiddleware({ pool, registry: { getSingleMetric() {}, registerMetric() {} } }); }
        catch (err) { refused = err.message; }
        const app = express();
        app.get('/', createTokenMiddleware({ pool, logger: null }), (req, res) => res.json(req.auth));
        const server = app.listen(0, '127.0.0.1', async () => {
          const res = await fetch('http://127.0.0.1:' + server.address().port + '/', {
            headers: { Authorization: 'Bearer ' + process.env.TOKEN },
          });
          const body = await res.json();
          console.log(JSON.stringify({ status: res.status, user: body.userHk, refused,
            loaded: Object.keys(require.cache).some((f) => f.includes('prom-client')) }));
          server.close();
          await pool.end();
        });
      })();
    `;
    const out = await new Promise((resolve, reject) => {
      execFile(process.execPath, ['-e', script], {
        cwd: path.join(__dirname, '..'),
        env: { ...process.env, TOKEN: token },
        timeout: 30000,
      }, (err, stdout, stderr) => (err ? reject(new Error(`${err.message}\n${stderr}`)) : resolve(stdout)));
    });
    const result = JSON.parse(out.trim().split('\n').at(-1));
    assert.deepEqual(result, {
      status: 200,
      user: owner.userHk.toString('hex'),
      refused: 'createTokenMiddleware: options.registry needs the prom-client package (npm install prom-client)',
      loaded: false,
    });
  });
});
