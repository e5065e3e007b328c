'use strict';

// Replica routing: validation runs on the replica; a refresh the replica defers
// (REFRESH_DEFERRED_READ_ONLY) is done on the primary within the same request. The
// replica is simulated by a pool whose connections are read-only.

const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const express = require('express');
const { Pool } = require('pg');

const { createTokenMiddleware } = require('..');
const h = require('../test-support/db');

const auth = (token) => ({ headers: { Authorization: `Bearer ${token}` } });

describe('replica routing', () => {
  let primaryPool;
  let replicaPool;
  let primary;
  let replica;
  let owner;
  let server;
  let strictServer;

  const counts = () => ({ primary: primary.count, replica: replica.count });
  const delta = (before) => ({ primary: primary.count - before.primary, replica: replica.count - before.replica });

  before(async () => {
    primaryPool = h.newPool();
    replicaPool = h.readOnlyPool();
    primary = h.countingPool(primaryPool);
    replica = h.countingPool(replicaPool);
    owner = await h.makeUser(primaryPool, 'node-replica', 'carol');
    const app = (options) => {
      const a = express();
      const mw = createTokenMiddleware({ pool: primary, replicaPool: replica, respond: true, logger: null, ...options });
      a.get('/whoami', mw, (req, res) => res.json(req.pyvault));
      a.get('/admin', mw.requireScope('api:admin'), (req, res) => res.json({}));
      return a;
    };
    server = await h.startServer(app({}));
    strictServer = await h.startServer(app({ confirmInvalidOnPrimary: false }));
  });

  after(async () => {
    await server.close();
    await strictServer.close();
    await primaryPool.end();
    await replicaPool.end();
  });

  it('the simulated replica really is read-only and defers refreshes', async () => {
    const token = await h.issueToken(primaryPool, owner, { expiresIn: '3 days' });
    const r = await replicaPool.query(
      'SELECT * FROM auth.validate_and_refresh_api_token($1::text, $2::text)',
      [token, 'api:read'],
    );
    assert.equal(r.rows[0].is_valid, true);
    assert.equal(r.rows[0].refresh_reason, 'REFRESH_DEFERRED_READ_ONLY');
    assert.equal(r.rows[0].new_token, null);
    assert.equal((await h.bridgeRow(primaryPool, token)).successor_hk, null, 'nothing was refreshed');
  });

  it('validates a token that needs no refresh on the replica alone', async () => {
    const token = await h.issueToken(primaryPool, owner, { expiresIn: '30 days' });
    const before = counts();
    const res = await fetch(`${server.url}/whoami`, auth(token));
    assert.equal(res.status, 200);
    assert.equal((await res.json()).userHk, owner.userHk.toString('hex'));
    assert.deepEqual(delta(before), { primary: 0, replica: 1 });
  });

  it('sends a refresh the replica deferred to the primary in the same request', async () => {
    const token = await h.issueToken(primaryPool, owner, { expiresIn: '3 days' });
    const before = counts();
    const res = await fetch(`${server.url}/whoami`, auth(token));
    assert.equal(res.status, 200);
    assert.deepEqual(delta(before), { primary: 1, replica: 1 });
    const newToken = res.headers.get('x-new-token');
    assert.match(newToken, /^ovt_prod_[0-9a-f]{64}$/);
    assert.equal(res.headers.get('x-refresh-reason'), 'EXPIRING_SOON');
    assert.equal(res.headers.get('cache-control'), 'no-store');
    assert.ok(res.headers.get('x-token-expires'));

    const row = await h.bridgeRow(primaryPool, token);
    assert.ok(row.successor_hk, 'the primary rotated the token');
    const successor = await h.bridgeRow(primaryPool, newToken);
    assert.ok(successor, 'the successor exists on the primary');

    // The successor's first use goes to the primary, which records it and so starts
    // the predecessor's grace window; after that it validates on the replica alone.
    let mid = counts();
    let next = await fetch(`${server.url}/whoami`, auth(newToken));
    assert.equal(next.status, 200);
    assert.equal(next.headers.get('x-new-token'), null);
    assert.deepEqual(delta(mid), { primary: 1, replica: 1 });
    mid = counts();
    next = await fetch(`${server.url}/whoami`, auth(newToken));
    assert.equal(next.status, 200);
    assert.equal(next.headers.get('x-new-token'), null);
    assert.deepEqual(delta(mid), { primary: 0, replica: 1 });

    // The old token, within grace, gets the same successor from the replica.
    const again = await fetch(`${server.url}/whoami`, auth(token));
    assert.equal(again.status, 200);
    assert.equal(again.headers.get('x-new-token'), newToken);
    assert.equal(again.headers.get('x-refresh-reason'), 'ALREADY_REFRESHED');
  });

  it('confirms a refusal on the primary unless configured not to', async () => {
    const unknown = `ovt_prod_${'cd'.repeat(32)}`;
    let before = counts();
    const res = await fetch(`${server.url}/whoami`, auth(unknown));
    assert.equal(res.status, 401);
    assert.equal(await res.text(), '{"error":"invalid_token"}');
    assert.deepEqual(delta(before), { primary: 1, replica: 1 });

    before = counts();
    const strict = await fetch(`${strictServer.url}/whoami`, auth(unknown));
    assert.equal(strict.status, 401);
    assert.equal(await strict.text(), '{"error":"invalid_token"}');
    assert.deepEqual(delta(before), { primary: 0, replica: 1 });
  });

  it('decides a missing scope on the replica', async () => {
    const token = await h.issueToken(primaryPool, owner, { expiresIn: '30 days' });
    const before = counts();
    const res = await fetch(`${server.url}/admin`, auth(token));
    assert.equal(res.status, 403);
    assert.deepEqual(delta(before), { primary: 0, replica: 1 });
  });

  it('serves the replica\'s valid answer when the primary is unreachable after a deferral', async () => {
    const port = await h.closedPort();
    const deadPrimary = new Pool({ host: '127.0.0.1', port, user: 'nobody', database: 'nothing', connectionTimeoutMillis: 2000 });
    deadPrimary.on('error', () => {});
    const a = express();
    a.get('/whoami', createTokenMiddleware({ pool: deadPrimary, replicaPool: replica, logger: null }), (req, res) => res.json({}));
    const s = await h.startServer(a);
    try {
      const token = await h.issueToken(primaryPool, owner, { expiresIn: '3 days' });
      const res = await fetch(`${s.url}/whoami`, auth(token));
      assert.equal(res.status, 200);
      assert.equal(res.headers.get('x-new-token'), null);
      const row = await h.bridgeRow(primaryPool, token);
      assert.equal(row.successor_hk, null, 'nothing was rotated');
    } finally {
      await s.close();
      await deadPrimary.end();
    }
  });

  it('falls back to the primary when the replica is unreachable', async () => {
    const port = await h.closedPort();
    const deadReplica = new Pool({ host: '127.0.0.1', port, user: 'nobody', database: 'nothing', connectionTimeoutMillis: 2000 });
    deadReplica.on('error', () => {});
    const a = express();
    a.get('/whoami', createTokenMiddleware({ pool: primary, replicaPool: deadReplica, logger: null }), (req, res) => res.json({}));
    const s = await h.startServer(a);
    try {
      const token = await h.issueToken(primaryPool, owner, { expiresIn: '30 days' });
      const before = counts();
      const res = await fetch(`${s.url}/whoami`, auth(token));
      assert.equal(res.status, 200);
      assert.equal(delta(before).primary, 1);
    } finally {
      await s.close();
      await deadReplica.end();
    }
  });
});
