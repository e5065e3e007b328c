'use strict';

// The errors a refusal hands to next(err). Shaped like express-jwt's UnauthorizedError
// (name, status, code, message, inner) so an application's error handler can treat both
// alike, with the RFC 6750 challenge in `headers`, the http-errors convention that
// Express's own error handler sends.

const RETRY_AFTER_SECONDS = '5';

class TokenError extends Error {
  constructor(status, code, message, { reason = null, scope = null, inner, headers }) {
    super(message);
    this.status = status;
    this.statusCode = status;
    this.code = code;
    this.reason = reason;
    this.scope = scope;
    this.inner = inner === undefined ? { message } : inner;
    this.challenge = headers['WWW-Authenticate'] === undefined ? null : headers['WWW-Authenticate'];
    this.headers = headers;
    this.expose = status < 500;
  }
}
TokenError.prototype.name = 'TokenError';

class UnauthorizedError extends TokenError {}
UnauthorizedError.prototype.name = 'UnauthorizedError';

class ForbiddenError extends TokenError {}
ForbiddenError.prototype.name = 'ForbiddenError';

class ServiceUnavailableError extends TokenError {}
ServiceUnavailableError.prototype.name = 'ServiceUnavailableError';

// RFC 6750 3.1: a request without credentials gets a challenge without an error code.
function credentialsRequired() {
  return new UnauthorizedError(401, 'credentials_required', 'No authorization token was found', {
    headers: { 'WWW-Authenticate': 'Bearer', 'Cache-Control': 'no-store' },
  });
}

function invalidToken(reason, message) {
  return new UnauthorizedError(401, 'invalid_token', message, {
    reason,
    headers: { 'WWW-Authenticate': 'Bearer error="invalid_token"', 'Cache-Control': 'no-store' },
  });
}

function insufficientScope(scope, reason, message) {
  return new ForbiddenError(403, 'insufficient_scope', message, {
    reason,
    scope,
    headers: {
      'WWW-Authenticate': `Bearer error="insufficient_scope", scope="${scope}"`,
      'Cache-Control': 'no-store',
    },
  });
}

// `inner` is the database's error as it was thrown; the message is always this one.
function unavailable(inner) {
  return new ServiceUnavailableError(503, 'temporarily_unavailable', 'Token validation is unavailable', {
    inner,
    headers: { 'Retry-After': RETRY_AFTER_SECONDS, 'Cache-Control': 'no-store' },
  });
}

module.exports = {
  TokenError,
  UnauthorizedError,
  ForbiddenError,
  ServiceUnavailableError,
  credentialsRequired,
  invalidToken,
  insufficientScope,
  unavailable,
};
