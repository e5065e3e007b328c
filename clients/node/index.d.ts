// Type declarations for pyvault-tokens (Node). The package is CommonJS:
//   const { createTokenMiddleware, createRefreshingFetch } = require('pyvault-tokens');

import type { IncomingMessage, ServerResponse } from 'node:http';

/** Anything with pg's `query(text, values)`: a `pg.Pool`, a `pg.Client`, or a wrapper. */
export interface Queryable {
  query(text: string, values?: unknown[]): Promise<{ rows: any[] }>;
}

/** A logger with console's methods; each call gets a message and an object of fields. */
export interface TokenLogger {
  info?(message: string, fields?: Record<string, unknown>): void;
  warn?(message: string, fields?: Record<string, unknown>): void;
  error?(message: string, fields?: Record<string, unknown>): void;
  log?(message: string, fields?: Record<string, unknown>): void;
}

/** What a validated request carries in `req.auth` and `req.pyvault` (the same object). */
export interface PyvaultAuth {
  /** The user's hash key, as lower-case hex. */
  userHk: string;
  /** The tenant's hash key, as lower-case hex. */
  tenantHk: string;
  /** The token's scopes. */
  scope: string[];
  /** When the token expires; after a refresh, when the new token expires. */
  expiresAt: Date;
  /** Whether this request refreshed the token (or was handed its successor again). */
  wasRefreshed: boolean;
  /** The refresh reason code, such as NO_REFRESH_NEEDED or EXPIRING_SOON. */
  refreshReason: string;
}

/** The subset of a prom-client `Registry` the middleware uses. */
export interface MetricsRegistry {
  getSingleMetric(name: string): unknown;
  registerMetric(metric: unknown): void;
}

export interface TokenMiddlewareOptions {
  /** The primary database. */
  pool: Queryable;
  /** A read replica: validation runs here first; deferred refreshes go to `pool`. */
  replicaPool?: Queryable | null;
  /** The scope every request needs. Default 'api:read'. */
  requiredScope?: string;
  /**
   * Whether a request without a Bearer token is refused. Default true. With false it
   * passes unauthenticated (no `req.auth`); a bad token is still refused, and
   * `requireScope()` always needs a token.
   */
  credentialsRequired?: boolean;
  /**
   * Answer refusals here with the built-in JSON bodies (the Python middleware's, byte for
   * byte) instead of calling `next(err)`. Default false.
   */
  respond?: boolean;
  /** With `respond: true`: add `reason` and `message` to refusal bodies. Default false (uniform 401s). */
  explainErrors?: boolean;
  /** With a replica: ask the primary before refusing a token (replication lag). Default true. */
  confirmInvalidOnPrimary?: boolean;
  /**
   * Where refreshes and failures are logged (never a whole token). Default: one line per
   * event on the console; null for none. A logger given here gets (message, fields).
   */
  logger?: TokenLogger | null;
  /**
   * A prom-client Registry: counts `pyvault_requests_total{outcome}` (ok, refreshed,
   * 401, 403, 503, anonymous) and observes `pyvault_validation_seconds`. Needs the
   * prom-client package. Default none.
   */
  registry?: MetricsRegistry | null;
}

/** A path rule of `unless()`: a path, a regular expression, or either for some methods only. */
export type UnlessPath = string | RegExp | { url: string | RegExp; method?: string; methods?: string | string[] };

/** When `unless()` skips the middleware (express-unless's options): any rule that matches. */
export interface UnlessRules {
  /** Methods to skip, such as 'OPTIONS'. */
  method?: string | string[];
  /** Paths to skip, compared to the raw path without the query (not decoded, not normalized). */
  path?: UnlessPath | UnlessPath[];
  /** Path endings to skip, such as '.css'. */
  ext?: string | string[];
  /** Compare `req.originalUrl` (true, the default) or the mount-relative `req.url`. */
  useOriginalUrl?: boolean;
  /** Skip when this returns (or resolves to) true. */
  custom?: (req: IncomingMessage) => boolean | Promise<boolean>;
}

export type UnlessOptions = UnlessRules | ((req: IncomingMessage) => boolean | Promise<boolean>);

/** Outcome codes of a refusal: `err.code`. */
export type TokenErrorCode = 'credentials_required' | 'invalid_token' | 'insufficient_scope' | 'temporarily_unavailable';

/**
 * What a refusal passes to `next(err)`, shaped like express-jwt's UnauthorizedError.
 * `headers` holds the RFC 6750 challenge (or Retry-After), which Express's own error
 * handler sends.
 */
export class TokenError extends Error {
  name: 'UnauthorizedError' | 'ForbiddenError' | 'ServiceUnavailableError' | 'TokenError';
  /** 401, 403 or 503. */
  status: 401 | 403 | 503;
  /** The same as `status` (http-errors' name). */
  statusCode: 401 | 403 | 503;
  code: TokenErrorCode;
  /** The database's reason code (TOKEN_INVALID, INSUFFICIENT_SCOPE); null otherwise. */
  reason: string | null;
  /** The required scope of a 403; null otherwise. */
  scope: string | null;
  /** The database error of a 503; `{ message }` otherwise (as express-jwt). */
  inner: unknown;
  /** The WWW-Authenticate value, or null (a 503 has none). */
  challenge: string | null;
  /** Headers the response should carry: WWW-Authenticate or Retry-After, and Cache-Control. */
  headers: Record<string, string>;
  /** True for 401 and 403, false for 503 (http-errors' convention). */
  expose: boolean;
}
/** 401: no token (`credentials_required`) or an invalid one (`invalid_token`). */
export class UnauthorizedError extends TokenError {
  name: 'UnauthorizedError';
}
/** 403: `insufficient_scope`. */
export class ForbiddenError extends TokenError {
  name: 'ForbiddenError';
}
/** 503: `temporarily_unavailable` (the database did not answer). */
export class ServiceUnavailableError extends TokenError {
  name: 'ServiceUnavailableError';
}

export type NextFunction = (err?: unknown) => void;

/**
 * A request after the middleware: `auth` (express-jwt's name) and `pyvault` are the same
 * object. `req.pyvault` is also declared on Express's Request; for `req.auth` use this
 * type, e.g. `TokenRequest<express.Request>` (other packages declare `auth` differently).
 */
export type TokenRequest<R = IncomingMessage> = R & { auth?: PyvaultAuth; pyvault?: PyvaultAuth };

export interface TokenRequestHandler {
  (req: TokenRequest, res: ServerResponse, next: NextFunction): void;
  /** The same handler, skipped for the requests the options name (express-unless). */
  unless(options: UnlessOptions): TokenRequestHandler;
}

export interface TokenMiddleware extends TokenRequestHandler {
  /** The same middleware for one route, with another required scope (always needs a token). */
  requireScope(scope: string): TokenRequestHandler;
}

export function createTokenMiddleware(options: TokenMiddlewareOptions): TokenMiddleware;

export type FetchLike = (input: string | URL | Request, init?: RequestInit) => Promise<Response>;

export interface RefreshingFetchOptions {
  /** The token to send; called for every request. */
  getToken(): string | Promise<string>;
  /** Store a new token; awaited before the response that carried it is returned. */
  setToken(token: string, expiresAt: Date | null): void | Promise<void>;
  /** The fetch to wrap. Default globalThis.fetch. */
  fetch?: FetchLike;
}

export function createRefreshingFetch(options: RefreshingFetchOptions): FetchLike;

/** The cheap format check: 'ovt_prod_' followed by 64 lower-case hex characters. */
export function isWellFormedToken(token: unknown): token is string;

declare global {
  namespace Express {
    interface Request {
      /** Set by pyvault-tokens' middleware on a request with a valid token. */
      pyvault?: PyvaultAuth;
    }
  }
}
