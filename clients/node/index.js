'use strict';

const { createTokenMiddleware } = require('./lib/middleware');
const { createRefreshingFetch } = require('./lib/fetch');
const { isWellFormedToken } = require('./lib/format');
const { TokenError, UnauthorizedError, ForbiddenError, ServiceUnavailableError } = require('./lib/errors');

module.exports = {
  createTokenMiddleware,
  createRefreshingFetch,
  isWellFormedToken,
  TokenError,
  UnauthorizedError,
  ForbiddenError,
  ServiceUnavailableError,
};
