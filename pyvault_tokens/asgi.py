"""ASGI middleware: validate ``Authorization: Bearer <token>`` in PostgreSQL, hand a
refreshed token back in ``X-New-Token``.

Pure ASGI, so it wraps Starlette, FastAPI or any other ASGI app (Starlette is needed for
the user objects it puts in the scope). Every request costs one call of
``auth.validate_and_refresh_api_token`` (``pyvault_tokens.api``) through a
``psycopg_pool.AsyncConnectionPool``; the database decides validity, scope and refresh.
The HTTP side behaves exactly like the Express middleware in ``clients/node`` (same
status codes, bodies, headers and replica routing), so a client cannot tell them apart::

    pool = AsyncConnectionPool(url, open=False, timeout=2)   # opened in the app's lifespan
    app.add_middleware(TokenRefreshMiddleware, pool=pool, exempt_paths=("/health",))

    @app.post("/items", dependencies=[Depends(require_scope("api:write"))])
    async def create_item(request: Request):
        auth = request.state.pyvault          # PyvaultAuth: user_hk, tenant_hk, scope, ...
        request.user.user_hk, request.auth.scopes   # as Starlette's AuthenticationMiddleware

FastAPI's security dependencies (OpenAPI bearer scheme, ``Security(..., scopes=[...])``)
are in ``pyvault_tokens.fastapi``.

Refusals (JSON, ``Cache-Control: no-store``), byte for byte the Node middleware's:

- no ``Authorization`` header, or another scheme: 401 ``{"error":"unauthorized"}``,
  ``WWW-Authenticate: Bearer`` (with ``optional=True`` such a request passes, anonymous);
- any invalid token (malformed, unknown, expired, revoked, reused): 401
  ``{"error":"invalid_token"}``, ``WWW-Authenticate: Bearer error="invalid_token"``;
  a malformed token is refused without a query;
- a valid token without the required scope: 403 ``{"error":"insufficient_scope"}``,
  ``WWW-Authenticate: Bearer error="insufficient_scope", scope="<scope>"``;
- the database unreachable or failing: 503 ``{"error":"temporarily_unavailable"}``,
  ``Retry-After: 5``, never a detail. A pooled connection that died (a database
  restart) is not a failure: the validation is retried once, after the pool has checked
  its idle connections (validation is idempotent).

With ``explain_errors=True`` the bodies also carry ``reason`` and ``message`` (for
development). Log lines show at most a token's prefix (``ovt_prod_1a2b…``); nothing of
a malformed token but its length.

This module is the public face of the ASGI layer; the code is split by idea:
``pyvault_tokens.middleware`` (TokenRefreshMiddleware), ``pyvault_tokens.responses``
(the bodies and headers, byte for byte the Node middleware's), ``pyvault_tokens.identity``
(PyvaultAuth, Starlette's PyvaultUser), ``pyvault_tokens.routes`` (the per-route checks
for Starlette and FastAPI) and ``pyvault_tokens.display`` (the token format).
"""

from pyvault_tokens.display import is_well_formed_token
from pyvault_tokens.identity import PyvaultAuth, PyvaultUser, pyvault_auth
from pyvault_tokens.middleware import VALIDATE_SQL, TokenRefreshMiddleware
from pyvault_tokens.responses import EXPOSE_HEADERS
from pyvault_tokens.routes import require_scope, requires_scope

__all__ = [
    "EXPOSE_HEADERS",
    "VALIDATE_SQL",
    "PyvaultAuth",
    "PyvaultUser",
    "TokenRefreshMiddleware",
    "is_well_formed_token",
    "pyvault_auth",
    "require_scope",
    "requires_scope",
]
