'use strict';

// The refreshing fetch wrapper against a real Express server and database: it stores the
// new token by itself, later requests use it, and concurrent requests during a rotation
// all succeed with one successor.

const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const express = require('express');

const { createTokenMiddleware, createRefreshingFetch } = require('..');
const h = require('../test-support/db');

// An in-memory token store that records what was stored, and a fetch that records the
// Authorization header of every request it sends.
function harness(initialToken) {
  const store = { token: initialToken, sets: [] };
  const sent = [];
  const client = createRefreshingFetch({
    getToken: () => store.token,
    setToken: async (token, expiresAt) => {
      await h.sleep(5); // a store write takes a moment, as a file or keychain would
      store.sets.push({ token, expiresAt });
      store.token = token;
    },
    fetch: (input, init) => {
      sent.push(new Headers(init.headers).get('authorization'));
      return fetch(input, init);
    },
  });
  return { store, sent, client };
}

describe('createRefreshingFetch', () => {
  let pool;
  let owner;
  let server;

  before(async () => {
    pool = h.newPool({ max: 10 });
    owner = await h.makeUser(pool, 'node-fetch', 'bob');
    const app = express();
    app.get('/whoami', createTokenMiddleware({ pool, logger: null }), (req, res) => res.json(req.pyvault));
    server = await h.startServer(app);
  });

  after(async () => {
    await server.close();
    await pool.end();
  });

  it('sends the token, picks up X-New-Token by itself and uses it from then on', async () => {
    const token = await h.issueToken(pool, owner, { expiresIn: '3 days' });
    const { store, sent, client } = harness(token);

    const first = await client(`${server.url}/whoami`);
    assert.equal(first.status, 200);
    assert.equal(sent[0], `Bearer ${token}`);
    const newToken = first.headers.get('x-new-token');
    assert.ok(newToken, 'the near-expiry token was rotated');
    assert.equal(store.sets.length, 1, 'setToken ran before the response was returned');
    assert.equal(store.token, newToken);
    assert.ok(store.sets[0].expiresAt instanceof Date);
    assert.equal(store.sets[0].expiresAt.toISOString(), first.headers.get('x-token-expires'));

    for (let i = 0; i < 3; i++) {
      const res = await client(`${server.url}/whoami`, { headers: { Accept: 'application/json' } });
      assert.equal(res.status, 200);
      assert.equal(res.headers.get('x-new-token'), null, 'the new token needs no refresh');
      assert.equal(sent.at(-1), `Bearer ${newToken}`);
    }
    assert.equal(store.sets.length, 1);
    const row = await h.bridgeRow(pool, token);
    assert.ok(row.successor_hk, 'the old token has a successor');
  });

  it('lets ten concurrent requests through a rotation, with one successor stored once', async () => {
    const token = await h.issueToken(pool, owner, { expiresIn: '3 days' });
    const { store, client } = harness(token);

    const responses = await Promise.all(
      Array.from({ length: 10 }, () => client(`${server.url}/whoami`)),
    );
    for (const res of responses) assert.equal(res.status, 200);
    const handedOut = new Set(responses.map((r) => r.headers.get('x-new-token')));
    assert.equal(handedOut.size, 1, `every response names the same successor, got ${[...handedOut]}`);
    const [newToken] = handedOut;
    assert.ok(newToken);
    const reasons = new Set(responses.map((r) => r.headers.get('x-refresh-reason')));
    assert.ok(reasons.has('EXPIRING_SOON'), 'one request rotated the token');
    for (const r of reasons) assert.ok(['EXPIRING_SOON', 'ALREADY_REFRESHED'].includes(r), r);
    assert.equal(store.sets.length, 1, 'the new token was stored once');
    assert.equal(store.token, newToken);

    const later = await Promise.all(Array.from({ length: 10 }, () => client(`${server.url}/whoami`)));
    for (const res of later) {
      assert.equal(res.status, 200);
      assert.equal(res.headers.get('x-new-token'), null);
    }
    // The predecessor stays valid within its grace window, so a request that was still
    // in flight with it succeeds as well.
    const straggler = await fetch(`${server.url}/whoami`, { headers: { Authorization: `Bearer ${token}` } });
    assert.equal(straggler.status, 200);
    assert.equal(straggler.headers.get('x-new-token'), newToken);
  });

  it('does not overwrite a token the application replaced meanwhile', async () => {
    const token = await h.issueToken(pool, owner, { expiresIn: '3 days' });
    const other = await h.issueToken(pool, owner, { expiresIn: '30 days' });
    const store = { token, sets: 0 };
    const client = createRefreshingFetch({
      getToken: () => store.token,
      setToken: () => {
        store.sets += 1;
      },
      fetch: async (input, init) => {
        const res = await fetch(input, init);
        store.token = other; // e.g. a re-login while this request was in flight
        return res;
      },
    });
    const res = await client(`${server.url}/whoami`);
    assert.equal(res.status, 200);
    assert.ok(res.headers.get('x-new-token'));
    assert.equal(store.sets, 0);
    assert.equal(store.token, other);
  });

  it('propagates a failing setToken with the response attached', async () => {
    const token = await h.issueToken(pool, owner, { expiresIn: '3 days' });
    const client = createRefreshingFetch({
      getToken: () => token,
      setToken: async () => {
        throw new Error('disk full');
      },
    });
    await assert.rejects(client(`${server.url}/whoami`), (err) => {
      assert.equal(err.message, 'disk full');
      assert.equal(err.response.status, 200);
      return true;
    });
  });

  it('refuses to run without a token or without callbacks', async () => {
    assert.throws(() => createRefreshingFetch({ setToken() {} }), TypeError);
    assert.throws(() => createRefreshingFetch({ getToken() {} }), TypeError);
    const client = createRefreshingFetch({ getToken: () => null, setToken() {} });
    await assert.rejects(client(`${server.url}/whoami`), TypeError);
  });
});
