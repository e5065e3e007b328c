'use strict';

// The default logger: one line per event on the console, never a whole token.

const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const express = require('express');

const { createTokenMiddleware } = require('..');
const { formatLine } = require('../lib/log');
const h = require('../test-support/db');

const bearer = (token) => ({ headers: { Authorization: `Bearer ${token}` } });

// Every console.info/warn/error call while `fn` runs, as [level, ...args].
async function captureConsole(fn) {
  const calls = [];
  const saved = { info: console.info, warn: console.warn, error: console.error };
  for (const level of Object.keys(saved)) console[level] = (...args) => calls.push([level, ...args]);
  try {
    await fn();
  } finally {
    Object.assign(console, saved);
  }
  return calls;
}

describe('the default logger', () => {
  let pool;
  let owner;
  let server;
  let broken;
  const tokens = [];

  before(async () => {
    pool = h.newPool();
    owner = await h.makeUser(pool, 'node-logging', 'lena');
    const app = express();
    app.get('/whoami', createTokenMiddleware({ pool, respond: true }), (req, res) => res.json({}));
    server = await h.startServer(app);
    const failing = {
      query: async (text, values) => {
        throw Object.assign(new Error(`boom for ${values[0]}\nsecond line "quoted"`), { code: 'XX000' });
      },
    };
    const b = express();
    b.get('/whoami', createTokenMiddleware({ pool: failing, respond: true }), (req, res) => res.json({}));
    broken = await h.startServer(b);
  });

  after(async () => {
    await server.close();
    await broken.close();
    await pool.end();
  });

  it('writes each event as one line of key=value fields', async () => {
    const expiring = await h.issueToken(pool, owner, { expiresIn: '3 days' });
    const revoked = await h.issueToken(pool, owner, { expiresIn: '30 days' });
    await h.revokeToken(pool, revoked);
    tokens.push(expiring, revoked);
    const calls = await captureConsole(async () => {
      const refreshed = await fetch(`${server.url}/whoami`, bearer(expiring));
      assert.equal(refreshed.status, 200);
      tokens.push(refreshed.headers.get('x-new-token'));
      assert.equal((await fetch(`${server.url}/whoami`, bearer(revoked))).status, 401);
      assert.equal((await fetch(`${server.url}/whoami`, bearer('not-a-token'))).status, 401);
      assert.equal((await fetch(`${broken.url}/whoami`, bearer(revoked))).status, 503);
    });

    assert.equal(calls.length, 4, JSON.stringify(calls));
    for (const [level, ...args] of calls) {
      assert.equal(args.length, 1, `${level}: one argument, a string`);
      assert.equal(typeof args[0], 'string');
      assert.doesNotMatch(args[0], /[\r\n]/, 'one line');
      assert.match(args[0], /^pyvault-tokens: /);
      for (const token of tokens) assert.ok(!args[0].includes(token.slice(13)), 'no whole token');
    }
    const [refresh, rejected, malformed, unavailable] = calls;
    assert.equal(refresh[0], 'info');
    assert.match(refresh[1], /^pyvault-tokens: token refreshed token=ovt_prod_[0-9a-f]{4}\u2026 reason=EXPIRING_SOON newToken=true expiresAt=\d{4}-\d\d-\d\dT[\d:.]+Z$/);
    assert.equal(rejected[0], 'warn');
    assert.match(rejected[1], /^pyvault-tokens: token rejected token=ovt_prod_[0-9a-f]{4}\u2026 reason=TOKEN_INVALID message="Token has been revoked"$/);
    assert.deepEqual(malformed, ['warn', 'pyvault-tokens: token rejected reason=MALFORMED length=11']);
    assert.equal(unavailable[0], 'error');
    assert.match(
      unavailable[1],
      /^pyvault-tokens: token validation unavailable token=ovt_prod_[0-9a-f]{4}\u2026 code=XX000 error="boom for ovt_prod_[0-9a-f]{4}\u2026\\nsecond line \\"quoted\\""$/,
    );
  });

  it('formats values: bare when safe, JSON-quoted otherwise, null and undefined left out', () => {
    assert.equal(
      formatLine('m', { a: 'x', b: 'two words', c: 3, d: true, e: null, f: undefined, g: '', h: 'a=b', i: new Date(0), j: ['x'] }),
      'm a=x b="two words" c=3 d=true g="" h="a=b" i=1970-01-01T00:00:00.000Z j="[\\"x\\"]"',
    );
    assert.equal(formatLine('m'), 'm');
  });

  it('a logger of your own still gets (message, fields), and null silences it', async () => {
    const got = [];
    const logger = { warn: (...args) => got.push(args) };
    const app = express();
    app.get('/a', createTokenMiddleware({ pool, respond: true, logger }), (req, res) => res.json({}));
    app.get('/b', createTokenMiddleware({ pool, respond: true, logger: null }), (req, res) => res.json({}));
    const s = await h.startServer(app);
    try {
      const calls = await captureConsole(async () => {
        await fetch(`${s.url}/a`, bearer('bad'));
        await fetch(`${s.url}/b`, bearer('bad'));
      });
      assert.deepEqual(got, [['pyvault-tokens: token rejected', { reason: 'MALFORMED', length: 3 }]]);
      assert.deepEqual(calls, [], 'nothing went to the console');
    } finally {
      await s.close();
    }
  });
});
