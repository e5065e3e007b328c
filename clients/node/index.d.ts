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

/** What a validated request carries in `req.pyvault`. */
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

export interface TokenMiddlewareOptions {
  /** The primary database. */
  pool: Queryable;
  /** A read replica: validation runs here first; deferred refreshes go to `pool`. */
  replicaPool?: Queryable | null;
  /** The scope every request needs. Default 'api:read'. */
  requiredScope?: string;
  /** Add `reason` and `message` to refusal bodies. Default false (uniform 401s). */
  explainErrors?: boolean;
  /** With a replica: ask the primary before refusing a token (replication lag). Default true. */
  confirmInvalidOnPrimary?: boolean;
  /** Where refreshes and failures are logged (never a whole token). Default console; null for none. */
  logger?: TokenLogger | null;
}

export type NextFunction = (err?: unknown) => void;

export type TokenRequestHandler = (
  req: IncomingMessage & { pyvault?: PyvaultAuth },
  res: ServerResponse,
  next: NextFunction,
) => void;

export interface TokenMiddleware extends TokenRequestHandler {
  /** The same middleware for one route, with another required scope. */
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
