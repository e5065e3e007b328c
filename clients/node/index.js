'use strict';

const { createTokenMiddleware } = require('./lib/middleware');
const { createRefreshingFetch } = require('./lib/fetch');
const { isWellFormedToken } = require('./lib/format');

module.exports = { createTokenMiddleware, createRefreshingFetch, isWellFormedToken };
