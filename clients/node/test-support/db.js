'use strict';

// Shared by the tests in test/: pools on DATABASE_URL, token issue through the package's
// own SQL, a query-counting pool wrapper, a log capture and a real HTTP server.
// Kept outside test/ so that `node --test` does not count it as a test file.

const net = require('node:net');
const util = require('node:util');
const { Pool } = require('pg');

function databaseUrl() {
  const url = process.env.DATABASE_URL;
  if (!url) {
    throw new Error('DATABASE_URL must name a PostgreSQL database migrated with pyvault-tokens');
  }
  return url;
}

function newPool(extra = {}) {
  const pool = new Pool({ connectionString: databaseUrl(), max: 4, ...extra });
  pool.on('error', () => {}); // an idle client dropped by the server must not crash a test
  return pool;
}

// A pool whose connections are read-only, as on a hot standby: the SQL then defers
// refreshes with REFRESH_DEFERRED_READ_ONLY. The setting is sent as a startup option of
// each connection (rather than a SET from the pool's 'connect' event, which pg 8.x warns
// about because it queues a second query on a client that is about to be handed out).
function readOnlyPool(extra = {}) {
  return newPool({ options: '-c default_transaction_read_only=on', ...extra });
}

// Wraps a pool and counts every query sent through it.
function countingPool(pool) {
  const counter = {
    count: 0,
    query(...args) {
      counter.count += 1;
      return pool.query(...args);
    },
  };
  return counter;
}

async function makeUser(pool, tenant, user) {
  const t = await pool.query('SELECT auth.register_tenant($1) AS hk', [tenant]);
  const tenantHk = t.rows[0].hk;
  const u = await pool.query('SELECT auth.register_user($1, $2) AS hk', [tenantHk, user]);
  return { tenantHk, userHk: u.rows[0].hk };
}

async function issueToken(pool, owner, { expiresIn = '30 days', scope = ['api:read'], type = 'PRODUCTION' } = {}) {
  const r = await pool.query(
    `SELECT token FROM auth.generate_production_api_token($1, $2, $3::text[], $4, $5::interval)`,
    [owner.userHk, owner.tenantHk, scope, type, expiresIn],
  );
  return r.rows[0].token;
}

async function revokeToken(pool, token) {
  const r = await pool.query('SELECT auth.revoke_api_token($1) AS revoked', [token]);
  return r.rows[0].revoked;
}

async function bridgeRow(pool, token) {
  const r = await pool.query(
    `SELECT successor_hk, is_revoked, expires_at, valid_until FROM auth.api_token_bridge
     WHERE token_hash = sha256(convert_to($1, 'UTF8'))`,
    [token],
  );
  return r.rows[0];
}

// A logger that keeps every line, each argument rendered the way a log sink would.
function captureLogger() {
  const lines = [];
  const record = (level) => (...args) => {
    lines.push(`${level} ${args.map((a) => (typeof a === 'string' ? a : util.inspect(a, { depth: 5 }))).join(' ')}`);
  };
  return { lines, logger: { info: record('info'), warn: record('warn'), error: record('error'), log: record('log') } };
}

async function startServer(app) {
  const server = await new Promise((resolve, reject) => {
    const s = app.listen(0, '127.0.0.1', (err) => (err ? reject(err) : resolve(s)));
  });
  const { port } = server.address();
  return {
    url: `http://127.0.0.1:${port}`,
    close: () => new Promise((resolve) => {
      server.closeAllConnections();
      server.close(() => resolve());
    }),
  };
}

// A local port with nothing listening on it.
async function closedPort() {
  const server = net.createServer();
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address();
  await new Promise((resolve) => server.close(resolve));
  return port;
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

module.exports = {
  databaseUrl,
  newPool,
  readOnlyPool,
  countingPool,
  makeUser,
  issueToken,
  revokeToken,
  bridgeRow,
  captureLogger,
  startServer,
  closedPort,
  sleep,
};
