'use strict';

// `.unless(options)` with express-unless's semantics (the version express-jwt uses):
// skip the middleware when the request's path, method, extension or a custom function
// says so. Written here rather than depending on express-unless 2.1.3 (its last release,
// 2022), which parses every request URL with url.parse(), runtime-deprecated (DEP0169)
// since Node.js 24, and leaves a throwing `custom` as an unhandled rejection on Express 4.

function toArray(value) {
  if (value === undefined) return [];
  return Array.isArray(value) ? value : [value];
}

// The path as the router sees it: the raw request target up to `?` or `#`, not decoded,
// dot segments kept. An absolute-form target gives null: no path rule matches it, so the
// middleware runs (a skip decided on another reading of the path could skip auth on a
// route that the router reaches).
function pathnameOf(url) {
  if (typeof url !== 'string' || !url.startsWith('/')) return null;
  const end = url.search(/[?#]/);
  return end < 0 ? url : url.slice(0, end);
}

function urlMatches(pattern, pathname) {
  if (typeof pattern === 'string') return pattern === pathname;
  if (pattern instanceof RegExp) return pathname.match(pattern) !== null;
  if (pattern && typeof pattern === 'object' && pattern.url) return urlMatches(pattern.url, pathname);
  return false;
}

function methodMatches(methods, method) {
  return methods === undefined || toArray(methods).includes(method);
}

function staticSkip(opts, req) {
  const pathname = pathnameOf((opts.useOriginalUrl ? req.originalUrl : req.url) || req.url);
  if (pathname !== null) {
    for (const p of opts.paths) {
      if (typeof p === 'string' || p instanceof RegExp) {
        if (urlMatches(p, pathname)) return true;
      } else if (p && urlMatches(p, pathname) && methodMatches(p.method || p.methods, req.method)) {
        return true;
      }
    }
    for (const ext of opts.exts) {
      if (pathname.slice(ext.length * -1) === ext) return true;
    }
  }
  return opts.methods.includes(req.method);
}

function unless(middleware, options) {
  const given = typeof options === 'function' ? { custom: options } : options;
  if (!given || typeof given !== 'object') {
    throw new TypeError('unless(options): options must be an object or a function of the request');
  }
  if (given.custom !== undefined && typeof given.custom !== 'function') {
    throw new TypeError('unless(options): options.custom must be a function of the request');
  }
  const opts = {
    custom: given.custom,
    paths: toArray(given.path),
    methods: toArray(given.method),
    exts: toArray(given.ext),
    useOriginalUrl: given.useOriginalUrl === undefined ? true : Boolean(given.useOriginalUrl),
  };

  const gated = function pyvaultTokensUnless(req, res, next) {
    const decide = (customSkip) => {
      if (customSkip || staticSkip(opts, req)) next();
      else middleware(req, res, next);
    };
    if (!opts.custom) return decide(false);
    let verdict;
    try {
      verdict = opts.custom(req);
    } catch (err) {
      return next(err);
    }
    if (verdict && typeof verdict.then === 'function') {
      verdict.then(decide, (err) => next(err));
    } else {
      decide(verdict);
    }
    return undefined;
  };
  gated.unless = (more) => unless(gated, more);
  return gated;
}

module.exports = { unless };
