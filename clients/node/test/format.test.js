'use strict';

// The cheap format check and the log redaction, without a database.

const { describe, it } = require('node:test');
const assert = require('node:assert/strict');

const { isWellFormedToken, createTokenMiddleware } = require('..');
const { tokenPrefix, redact } = require('../lib/format');

const good = `ovt_prod_${'0123456789abcdef'.repeat(4)}`;

describe('token format', () => {
  it('accepts ovt_prod_ and 64 lower-case hex characters only', () => {
    assert.equal(good.length, 73);
    assert.equal(isWellFormedToken(good), true);
    for (const bad of [
      undefined,
      null,
      42,
      '',
      good.slice(0, 72),
      `${good}0`,
      good.toUpperCase(),
      `OVT_PROD_${good.slice(9)}`,
      `ovt_prod_${'0123456789ABCDEF'.repeat(4)}`,
      `ovt_prod_${'g'.repeat(64)}`,
      `ovt_prod_${' '.repeat(64)}`,
      `ovt_prod_${'\u00e9'.repeat(64)}`,
      `ovt_prod_${'0'.repeat(63)}\u0000`,
    ]) {
      assert.equal(isWellFormedToken(bad), false, JSON.stringify(bad));
    }
  });

  it('shows 13 characters and an ellipsis of a token, and redacts tokens in text', () => {
    assert.equal(tokenPrefix(good), 'ovt_prod_0123\u2026');
    assert.equal(redact(`failed for ${good}!`), 'failed for ovt_prod_0123\u2026!');
    assert.equal(redact(null), null);
  });

  it('refuses a bad configuration when it is built, not at request time', () => {
    assert.throws(() => createTokenMiddleware({}), TypeError);
    const pool = { query: async () => ({ rows: [] }) };
    assert.throws(() => createTokenMiddleware({ pool, requiredScope: 'has space' }), TypeError);
    assert.throws(() => createTokenMiddleware({ pool, requiredScope: 'a"b' }), TypeError);
    assert.throws(() => createTokenMiddleware({ pool, replicaPool: {} }), TypeError);
    assert.throws(() => createTokenMiddleware({ pool }).requireScope(''), TypeError);
  });
});
