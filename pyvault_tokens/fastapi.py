"""FastAPI security dependencies on top of TokenRefreshMiddleware.

Built on ``fastapi.security.HTTPBearer``, so the OpenAPI schema declares a bearer
security scheme (``PyvaultBearer``), each route using them lists it with its scopes, and
Swagger UI's Authorize button sends the token::

    from pyvault_tokens.fastapi import Authenticated, MaybeAuthenticated, require

    @app.get("/api/me")
    async def me(auth: Authenticated): ...                   # any valid token

    @app.post("/api/items")
    async def create(auth: Annotated[PyvaultAuth, require("api:write")]): ...

    @app.get("/api/feed")                                    # with optional=True
    async def feed(auth: MaybeAuthenticated): ...            # PyvaultAuth or None

``require("api:write")`` is ``Security(token_auth, scopes=["api:write"])``, which works
as well, written out. The middleware has already asked the database; these check the
request it validated (no second query) and answer with the middleware's own bodies:
a missing scope is its 403 ``insufficient_scope``, and a request without credentials
(where the middleware is ``optional``) its 401 ``unauthorized`` with
``WWW-Authenticate: Bearer``, never FastAPI's 403 or a 422. The bearer scheme has
``auto_error=False``: the middleware, not FastAPI, refuses requests.

With ``TokenRefreshMiddleware(required_scope=None)`` the middleware accepts a token that
holds any of the scopes the routes name; scopes given through ``require()`` are known to
it, scopes written as ``Security(token_auth, scopes=[...])`` only when they are also
listed in the middleware's ``accepted_scopes``.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer, SecurityScopes
from starlette.requests import Request

from pyvault_tokens.identity import PyvaultAuth
from pyvault_tokens.routes import Anonymous, check_scope, checked_auth, register_scope, require_auth

__all__ = ["Authenticated", "MaybeAuthenticated", "bearer_scheme", "optional_token_auth",
           "require", "token_auth"]

SCHEME_NAME = "PyvaultBearer"

bearer_scheme = HTTPBearer(
    auto_error=False,
    scheme_name=SCHEME_NAME,
    bearerFormat="ovt_prod_ followed by 64 hex characters",
    description=("A pyvault-tokens API token. A response may carry a rotated token in "
                 "X-New-Token (with X-Token-Expires and X-Refresh-Reason): use it from then on."),
)

Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)]


async def token_auth(security_scopes: SecurityScopes, request: Request,
                     credentials: Credentials) -> PyvaultAuth:
    """The request's PyvaultAuth; the token must hold every scope of
    ``Security(token_auth, scopes=[...])``."""
    return checked_auth(request.scope, security_scopes.scopes)


async def optional_token_auth(security_scopes: SecurityScopes, request: Request,
                              credentials: Credentials) -> PyvaultAuth | None:
    """None for a request without a token (the middleware must be ``optional`` there);
    otherwise as ``token_auth``."""
    try:
        require_auth(request.scope)
    except Anonymous:
        return None
    return checked_auth(request.scope, security_scopes.scopes)


def require(*scopes: str) -> Any:
    """``Security(token_auth, scopes=[...])``, with the scopes made known to a middleware
    that has ``required_scope=None``."""
    for scope in scopes:
        register_scope(check_scope(scope, "require(scope)"))
    return Security(token_auth, scopes=list(scopes))


Authenticated = Annotated[PyvaultAuth, Security(token_auth)]
"""A route parameter: any valid token; 401 (never 422) without one."""

MaybeAuthenticated = Annotated[PyvaultAuth | None, Security(optional_token_auth)]
"""A route parameter: the token's PyvaultAuth, or None when there is none."""
