'use strict';

// An Express gateway in front of internal services, using pyvault-tokens' Node
// middleware (clients/node). Every /api request needs a valid token; refreshed tokens
// go back to the caller in X-New-Token, exactly as with the Python middleware.
//
//   DATABASE_URL=postgresql://app@db/app node examples/express_gateway.js
//
// Environment:
//   DATABASE_URL   the database migrated with pyvault-tokens (required)
//   REPLICA_URL    a read replica to validate on (optional)
//   UPSTREAM_URL   forward /api/* there, with the caller's identity in X-Pyvault-User
//                  and X-Pyvault-Tenant and without the token (optional; without it the
//                  gateway answers /api/me and /api/items itself)
//   HOST, PORT     where to listen (default 127.0.0.1:8080; PORT=0 picks a free port)
//
// From a checkout, run `npm ci` in clients/node once: the packages are found there.

const path = require('node:path');
const { createRequire } = require('node:module');

const NODE_CLIENT = path.join(__dirname, '..', 'clients', 'node');

// An installed package first, else the checkout's clients/node (and its node_modules).
function load(name) {
  try {
    return require(name);
  } catch (err) {
    if (err.code !== 'MODULE_NOT_FOUND') throw err;
    if (name === 'pyvault-tokens') return require(NODE_CLIENT);
    return createRequire(path.join(NODE_CLIENT, 'package.json'))(name);
  }
}

const express = load('express');
const { Pool } = load('pg');
const { createTokenMiddleware } = load('pyvault-tokens');

const HOP_BY_HOP = new Set([
  'connection', 'keep-alive', 'proxy-authenticate', 'proxy-authorization', 'te', 'trailer',
  'transfer-encoding', 'upgrade', 'host', 'authorization', 'content-length',
]);
// Headers the gateway owns on the way back: the token headers are the middleware's.
const KEEP_OURS = new Set(['x-new-token', 'x-token-expires', 'x-refresh-reason', 'cache-control',
  'content-length', 'content-encoding', 'transfer-encoding', 'connection', 'keep-alive']);

function newPool(connectionString) {
  const pool = new Pool({
    connectionString,
    max: 10,
    connectionTimeoutMillis: 2000, // fail fast (503) instead of queueing forever
    query_timeout: 2000,
  });
  pool.on('error', (err) => console.error('pyvault gateway: idle client error', err.code));
  return pool;
}

function buildApp({ pool, replicaPool, upstream }) {
  // respond: true answers refusals with the built-in JSON bodies (the Python
  // middleware's, byte for byte); without it they go to next(err), for an error handler.
  const auth = createTokenMiddleware({ pool, replicaPool, respond: true });
  const app = express();
  app.disable('x-powered-by');

  app.get('/health', (req, res) => res.json({ ok: true }));
  app.use('/api', auth);

  if (upstream) {
    app.use('/api', express.raw({ type: () => true, limit: '1mb' }), forwardTo(upstream));
    return app;
  }

  let nextId = 1;
  app.get('/api/me', (req, res) => res.json(req.pyvault));
  app.post('/api/items', auth.requireScope('api:write'), express.json(), (req, res) => {
    res.status(201).json({ id: nextId++, name: req.body && req.body.name, owner: req.pyvault.userHk });
  });
  return app;
}

// Forward the request to the upstream service with the caller's identity instead of the
// token, and copy the answer back (the middleware's token headers stay as they are).
function forwardTo(upstream) {
  return async function forward(req, res, next) {
    try {
      const headers = new Headers();
      for (const [name, value] of Object.entries(req.headers)) {
        if (!HOP_BY_HOP.has(name) && value !== undefined) headers.set(name, String(value));
      }
      headers.set('X-Pyvault-User', req.pyvault.userHk);
      headers.set('X-Pyvault-Tenant', req.pyvault.tenantHk);
      headers.set('X-Pyvault-Scope', req.pyvault.scope.join(' '));
      const hasBody = !['GET', 'HEAD'].includes(req.method) && Buffer.isBuffer(req.body) && req.body.length > 0;
      const answer = await fetch(new URL(req.originalUrl, upstream), {
        method: req.method,
        headers,
        body: hasBody ? req.body : undefined,
        redirect: 'manual',
      });
      res.status(answer.status);
      answer.headers.forEach((value, name) => {
        if (!KEEP_OURS.has(name) || (name === 'cache-control' && !res.getHeader('X-New-Token'))) {
          res.setHeader(name, value);
        }
      });
      res.end(Buffer.from(await answer.arrayBuffer()));
    } catch (err) {
      console.error('pyvault gateway: upstream failed', err.code || err.name);
      if (!res.headersSent) res.status(502).json({ error: 'bad_gateway' });
      else next(err);
    }
  };
}

function main() {
  const databaseUrl = process.env.DATABASE_URL;
  if (!databaseUrl) {
    console.error('DATABASE_URL must name a database migrated with pyvault-tokens');
    process.exit(2);
  }
  const pool = newPool(databaseUrl);
  const replicaPool = process.env.REPLICA_URL ? newPool(process.env.REPLICA_URL) : null;
  const app = buildApp({ pool, replicaPool, upstream: process.env.UPSTREAM_URL || null });
  const host = process.env.HOST || '127.0.0.1';
  const port = Number(process.env.PORT ?? 8080);
  const server = app.listen(port, host, () => {
    const address = server.address();
    console.log(`pyvault gateway listening on http://${host}:${address.port}`);
  });
  const stop = () => {
    server.close(() => Promise.all([pool.end(), replicaPool && replicaPool.end()]).then(() => process.exit(0)));
    server.closeAllConnections();
  };
  process.on('SIGINT', stop);
  process.on('SIGTERM', stop);
}

if (require.main === module) main();

module.exports = { buildApp };
