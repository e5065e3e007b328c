'use strict';

// A fetch wrapper for clients of a pyvault-tokens API: it sends the current token and,
// when a response hands out a new one in X-New-Token, stores it with setToken before the
// response is returned, so the next request already uses it.

const { isWellFormedToken } = require('./format');

function parseDate(value) {
  if (!value) return null;
  const date = new Date(value);
  return Number.isNaN(date.getTime()) ? null : date;
}

function createRefreshingFetch(options = {}) {
  const { getToken, setToken, fetch: fetchImpl = globalThis.fetch } = options;
  if (typeof getToken !== 'function') throw new TypeError('createRefreshingFetch: getToken must be a function');
  if (typeof setToken !== 'function') throw new TypeError('createRefreshingFetch: setToken must be a function');
  if (typeof fetchImpl !== 'function') throw new TypeError('createRefreshingFetch: no fetch implementation');

  // Token updates run one after another: of several concurrent responses that carry the
  // same new token, the first stores it and the rest see it stored already.
  let updates = Promise.resolve();

  return async function refreshingFetch(input, init) {
    const token = await getToken();
    if (typeof token !== 'string' || token === '') {
      throw new TypeError('createRefreshingFetch: getToken() returned no token');
    }
    const isRequest = typeof Request !== 'undefined' && input instanceof Request;
    const headers = new Headers(
      init && init.headers !== undefined ? init.headers : isRequest ? input.headers : undefined,
    );
    headers.set('Authorization', `Bearer ${token}`);
    const response = await fetchImpl(input, { ...init, headers });

    const newToken = response.headers.get('x-new-token');
    if (newToken && newToken !== token && isWellFormedToken(newToken)) {
      const expiresAt = parseDate(response.headers.get('x-token-expires'));
      const update = updates.then(async () => {
        // Store only while the token we sent is still the current one: otherwise it was
        // stored already, or the application switched to another token meanwhile.
        if ((await getToken()) !== token) return;
        await setToken(newToken, expiresAt);
      });
      updates = update.catch(() => {});
      try {
        await update;
      } catch (err) {
        // The server has rotated the token; the old one still works for a while and the
        // next request gets the same new token again, so the caller can retry the store.
        if (err && typeof err === 'object') err.response = response;
        throw err;
      }
    }
    return response;
  };
}

module.exports = { createRefreshingFetch };
