'use strict';

// Express (connect-style) middleware that validates `Authorization: Bearer <token>` with
// auth.validate_and_refresh_api_token and hands a refreshed token back in X-New-Token.
// Written against plain node:http request/response objects, so it needs no express.
//
// A refusal is an error object (lib/errors.js) passed to next(err), for the application's
// error handler, or with `respond: true` answered here with the built-in JSON bodies,
// which the Python middleware answers byte for byte.

const { isWellFormedToken, tokenPrefix, redact } = require('./format');
const errors = require('./errors');
const { lineLogger, makeLog } = require('./log');
const { createMetrics } = require('./metrics');
const { unless } = require('./unless');

const VALIDATE_SQL = 'SELECT * FROM auth.validate_and_refresh_api_token($1::text, $2::text)';

// RFC 6750 scope-token characters: printable ASCII except space, `"` and `\`.
const SCOPE_TOKEN = /^[\x21\x23-\x5B\x5D-\x7E]+$/;

// The built-in bodies of `respond: true`, one per error code.
const BODIES = {
  credentials_required: '{"error":"unauthorized"}',
  invalid_token: '{"error":"invalid_token"}',
  insufficient_scope: '{"error":"insufficient_scope"}',
  temporarily_unavailable: '{"error":"temporarily_unavailable"}',
};
// Codes whose body says more with `explainErrors: true`.
const EXPLAINED = new Set(['invalid_token', 'insufficient_scope']);

// Marks a request this middleware (one createTokenMiddleware call) already validated,
// so a later requireScope() on the same request decides without another query.
const VALIDATED = Symbol('pyvault-tokens.validated');

function checkScope(scope, what) {
  if (typeof scope !== 'string' || !SCOPE_TOKEN.test(scope)) {
    throw new TypeError(`${what} must be a non-empty scope name such as 'api:read'`);
  }
}

function checkQueryable(pool, what) {
  if (!pool || typeof pool.query !== 'function') {
    throw new TypeError(`${what} must have a query() method, such as a pg.Pool`);
  }
}

// The token of `Authorization: Bearer <token>`; undefined when there is no header or it
// names another scheme; '' when the Bearer scheme has no token.
function bearerToken(header) {
  if (typeof header !== 'string') return undefined;
  const space = header.indexOf(' ');
  const scheme = space < 0 ? header : header.slice(0, space);
  if (scheme.toLowerCase() !== 'bearer') return undefined;
  return space < 0 ? '' : header.slice(space + 1).trim();
}

function send(res, status, body, headers) {
  if (res.headersSent) return;
  res.statusCode = status;
  res.setHeader('Content-Type', 'application/json; charset=utf-8');
  res.setHeader('Content-Length', Buffer.byteLength(body));
  res.setHeader('Cache-Control', 'no-store');
  for (const [name, value] of Object.entries(headers)) res.setHeader(name, value);
  res.end(body);
}

// The built-in answer to a refusal (`respond: true`).
function respond(ctx, res, err) {
  const body = ctx.explainErrors && EXPLAINED.has(err.code)
    ? JSON.stringify({ error: err.code, reason: err.reason, message: err.message })
    : BODIES[err.code];
  send(res, err.status, body, err.headers);
}

function toIsoString(value) {
  const date = value instanceof Date ? value : new Date(value);
  return Number.isNaN(date.getTime()) ? String(value) : date.toISOString();
}

function toHex(value) {
  if (value == null) return null;
  if (Buffer.isBuffer(value)) return value.toString('hex');
  // A custom bytea parser may hand back '\x...' text.
  return String(value).replace(/^\\x/, '');
}

// Keep `Cache-Control: no-store` on a response that carries X-New-Token, even when a
// later handler sets its own Cache-Control: re-applied just before the headers go out.
function enforceNoStore(res) {
  res.setHeader('Cache-Control', 'no-store');
  const writeHead = res.writeHead;
  res.writeHead = function writeHeadNoStore(statusCode, ...rest) {
    if (this.getHeader('X-New-Token') !== undefined) {
      this.setHeader('Cache-Control', 'no-store');
      const last = rest.length ? rest[rest.length - 1] : undefined;
      if (Array.isArray(last)) {
        const copy = last.slice();
        for (let i = 0; i + 1 < copy.length; i += 2) {
          if (String(copy[i]).toLowerCase() === 'cache-control') copy[i + 1] = 'no-store';
        }
        rest[rest.length - 1] = copy;
      } else if (last && typeof last === 'object') {
        const copy = { ...last };
        for (const key of Object.keys(copy)) {
          if (key.toLowerCase() === 'cache-control') copy[key] = 'no-store';
        }
        rest[rest.length - 1] = copy;
      }
    }
    return writeHead.call(this, statusCode, ...rest);
  };
}

async function queryOne(pool, token, scope) {
  const result = await pool.query(VALIDATE_SQL, [token, scope]);
  const row = result && Array.isArray(result.rows) ? result.rows[0] : undefined;
  if (!row) throw new Error('auth.validate_and_refresh_api_token returned no row');
  return row;
}

function createTokenMiddleware(options = {}) {
  const {
    pool,
    replicaPool = null,
    requiredScope = 'api:read',
    credentialsRequired = true,
    respond: respondHere = false,
    explainErrors = false,
    confirmInvalidOnPrimary = true,
    logger = lineLogger,
    registry = null,
  } = options;
  checkQueryable(pool, 'createTokenMiddleware: options.pool');
  if (replicaPool != null) checkQueryable(replicaPool, 'createTokenMiddleware: options.replicaPool');
  checkScope(requiredScope, 'createTokenMiddleware: options.requiredScope');
  const ctx = {
    pool,
    replicaPool,
    respond: Boolean(respondHere),
    explainErrors: Boolean(explainErrors),
    confirmInvalidOnPrimary,
    log: makeLog(logger),
    metrics: createMetrics(registry),
  };

  const middleware = handlerFor(ctx, requiredScope, Boolean(credentialsRequired));
  // A route that demands a scope demands a token, whatever credentialsRequired says.
  middleware.requireScope = function requireScope(scope) {
    checkScope(scope, 'requireScope(scope)');
    return handlerFor(ctx, scope, true);
  };
  return middleware;
}

function handlerFor(ctx, scope, credentialsRequired) {
  const handler = function pyvaultTokens(req, res, next) {
    authenticate(ctx, scope, credentialsRequired, req, res).then(
      (refusal) => {
        if (!refusal) next();
        else if (ctx.respond) respond(ctx, res, refusal);
        else next(refusal);
      },
      (err) => next(err),
    );
  };
  handler.unless = (options) => unless(handler, options);
  return handler;
}

function count(ctx, outcome) {
  if (ctx.metrics) ctx.metrics.count(outcome);
}

// The answer of the replica when there is one, else of the primary. The primary is asked
// (in the same request) when the replica defers a refresh, when the replica fails, and,
// unless configured off, to confirm a refusal: a token rotated a moment ago may not have
// reached the replica yet, and the revocation that follows reuse can only happen there.
async function validate(ctx, token, scope) {
  if (!ctx.replicaPool) return queryOne(ctx.pool, token, scope);
  let row;
  try {
    row = await queryOne(ctx.replicaPool, token, scope);
  } catch (err) {
    ctx.log('warn', 'replica unavailable, validating on the primary', {
      code: err && err.code,
      error: redact(err && err.message),
    });
    return queryOne(ctx.pool, token, scope);
  }
  if (row.refresh_reason === 'REFRESH_DEFERRED_READ_ONLY') {
    try {
      return await queryOne(ctx.pool, token, scope);
    } catch (err) {
      // The token is valid; only its refresh (or first-use record) waits. A primary
      // outage must not turn a valid token into a failed request.
      ctx.log('warn', "primary unavailable, the replica's answer stands", {
        code: err && err.code,
        error: redact(err && err.message),
      });
      return row;
    }
  }
  if (!row.is_valid && row.refresh_reason !== 'INSUFFICIENT_SCOPE' && ctx.confirmInvalidOnPrimary) {
    return queryOne(ctx.pool, token, scope);
  }
  return row;
}

// Null when the request may go on (with req.pyvault and req.auth set when it carried a
// valid token), else the refusal as an error object.
async function authenticate(ctx, scope, credentialsRequired, req, res) {
  const token = bearerToken(req.headers && req.headers.authorization);
  if (token === undefined) {
    if (!credentialsRequired) {
      count(ctx, 'anonymous');
      return null;
    }
    count(ctx, '401');
    return errors.credentialsRequired();
  }
  if (!isWellFormedToken(token)) {
    // Nothing of a malformed token is logged: it may be short enough to be all prefix.
    ctx.log('warn', 'token rejected', { reason: 'MALFORMED', length: token.length });
    count(ctx, '401');
    return errors.invalidToken('TOKEN_INVALID', 'Token format is invalid');
  }
  const prefix = tokenPrefix(token);

  const earlier = req[VALIDATED];
  if (earlier && earlier.ctx === ctx && earlier.token === token && req.pyvault) {
    // Counted once already, as ok or refreshed; a refusal here is counted too.
    if (req.pyvault.scope.includes(scope)) return null;
    ctx.log('warn', 'token lacks the required scope', { token: prefix, scope });
    count(ctx, '403');
    return errors.insufficientScope(scope, 'INSUFFICIENT_SCOPE', 'Token lacks the required scope');
  }

  let row;
  const started = process.hrtime.bigint();
  try {
    row = await validate(ctx, token, scope);
  } catch (err) {
    if (ctx.metrics) ctx.metrics.observe(Number(process.hrtime.bigint() - started) / 1e9);
    ctx.log('error', 'token validation unavailable', {
      token: prefix,
      code: err && err.code,
      error: redact(err && err.message),
    });
    count(ctx, '503');
    return errors.unavailable(err);
  }
  if (ctx.metrics) ctx.metrics.observe(Number(process.hrtime.bigint() - started) / 1e9);

  const reason = row.refresh_reason;
  if (!row.is_valid) {
    if (reason === 'INSUFFICIENT_SCOPE') {
      ctx.log('warn', 'token lacks the required scope', { token: prefix, scope });
      count(ctx, '403');
      return errors.insufficientScope(scope, reason, row.message);
    }
    ctx.log('warn', 'token rejected', { token: prefix, reason, message: redact(row.message) });
    count(ctx, '401');
    return errors.invalidToken(reason || 'TOKEN_INVALID', row.message);
  }

  const expiresAt = row.expires_at instanceof Date ? row.expires_at : new Date(row.expires_at);
  const identity = {
    userHk: toHex(row.user_hk),
    tenantHk: toHex(row.tenant_hk),
    scope: Array.isArray(row.scope) ? row.scope : [],
    expiresAt,
    wasRefreshed: Boolean(row.was_refreshed),
    refreshReason: reason,
  };
  req.pyvault = identity;
  req.auth = identity; // express-jwt's property
  req[VALIDATED] = { ctx, token };

  if (row.was_refreshed || row.new_token != null) {
    res.setHeader('X-Token-Expires', toIsoString(row.expires_at));
    res.setHeader('X-Refresh-Reason', String(reason));
    if (row.new_token != null) {
      res.setHeader('X-New-Token', row.new_token);
      enforceNoStore(res);
    }
    ctx.log('info', 'token refreshed', {
      token: prefix,
      reason,
      newToken: row.new_token != null,
      expiresAt: toIsoString(row.expires_at),
    });
    count(ctx, 'refreshed');
    return null;
  }
  if (reason === 'REFRESH_FAILED') {
    ctx.log('warn', 'token refresh failed, the token stays valid', {
      token: prefix,
      message: redact(row.message),
    });
  } else if (reason === 'REFRESH_DEFERRED_READ_ONLY') {
    ctx.log('info', 'token refresh deferred: the database is read-only', { token: prefix });
  }
  count(ctx, 'ok');
  return null;
}

module.exports = { createTokenMiddleware, VALIDATE_SQL };
