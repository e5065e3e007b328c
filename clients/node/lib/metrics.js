'use strict';

// Optional Prometheus metrics through prom-client, an optional peer dependency: it is
// loaded only when a Registry is given, so the package works without it. The names,
// outcomes, buckets and help texts are the ASGI middleware's
// (pyvault_tokens/request_metrics.py), so one dashboard reads both.

const REQUESTS = 'pyvault_requests_total';
const VALIDATION = 'pyvault_validation_seconds';
const OUTCOMES = ['ok', 'refreshed', '401', '403', '503', 'anonymous'];
// One index probe is well under a millisecond; a pool wait or a failover takes seconds.
const BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];

function loadPromClient() {
  try {
    return require('prom-client');
  } catch (err) {
    if (err && err.code === 'MODULE_NOT_FOUND') {
      throw new Error('createTokenMiddleware: options.registry needs the prom-client package (npm install prom-client)');
    }
    throw err;
  }
}

// The metrics of a middleware on `registry`; null without one. Several middlewares on one
// registry share the same two metrics.
function createMetrics(registry) {
  if (registry == null) return null;
  if (typeof registry.getSingleMetric !== 'function' || typeof registry.registerMetric !== 'function') {
    throw new TypeError('createTokenMiddleware: options.registry must be a prom-client Registry');
  }
  const client = loadPromClient();
  const requests = registry.getSingleMetric(REQUESTS) || new client.Counter({
    name: REQUESTS,
    help: 'Requests decided by the pyvault-tokens middleware, by outcome',
    labelNames: ['outcome'],
    registers: [registry],
  });
  const validation = registry.getSingleMetric(VALIDATION) || new client.Histogram({
    name: VALIDATION,
    help: 'Time spent validating a token in the database, per request',
    buckets: BUCKETS,
    registers: [registry],
  });
  // Every outcome is exported from the start, so rate() also sees the first event of each.
  for (const outcome of OUTCOMES) requests.inc({ outcome }, 0);
  return {
    count(outcome) {
      requests.inc({ outcome });
    },
    observe(seconds) {
      validation.observe(seconds);
    },
  };
}

module.exports = { createMetrics, REQUESTS, VALIDATION, OUTCOMES, BUCKETS };
