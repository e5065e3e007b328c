"""Per-route scope checks on a request the middleware already validated (no second
query): ``require_scope`` for FastAPI's ``Depends``, ``requires_scope`` for Starlette
endpoints, and the core that ``pyvault_tokens.fastapi`` builds its security
dependencies on.

A check that fails raises (or answers with) a response carrying the internal marker
header ``responses.DENIAL_MARKER``; ``TokenRefreshMiddleware`` replaces that response
with its own 401 or 403, so the body is the middleware's whatever renders the route's
errors. Needs only Starlette (the asgi extra): FastAPI is not imported here.
"""

from __future__ import annotations

import functools
import inspect
import re
from collections.abc import Callable, Iterable, MutableMapping
from typing import Any, cast

from starlette.exceptions import HTTPException
from starlette.requests import HTTPConnection
from starlette.responses import Response
from starlette.websockets import WebSocket

from pyvault_tokens.identity import PyvaultAuth, pyvault_auth, request_state
from pyvault_tokens.responses import CHALLENGE_BARE, DENIAL_MARKER, insufficient_challenge

__all__ = ["PyvaultDenial", "require_scope", "requires_scope"]

# RFC 6750 scope-token characters: printable ASCII except space, '"' and '\'.
_SCOPE_TOKEN = re.compile(r"[\x21\x23-\x5B\x5D-\x7E]+")
_MARKER = DENIAL_MARKER.decode("ascii")

# Every scope a route check names (require_scope, requires_scope, fastapi.require), in
# the order they were declared: with required_scope=None the middleware accepts a token
# that holds any of them.
ROUTE_SCOPES: dict[str, None] = {"api:read": None}


def check_scope(scope: object, what: str) -> str:
    """``scope`` if it is a scope name RFC 6750 allows; TypeError otherwise."""
    if not isinstance(scope, str) or not _SCOPE_TOKEN.fullmatch(scope):
        raise TypeError(f"{what} must be a non-empty scope name such as 'api:read'")
    return scope


def register_scope(scope: str) -> str:
    ROUTE_SCOPES.setdefault(scope, None)
    return scope


class Anonymous(Exception):
    """A route check ran on a request that passed without a token (``optional``)."""


class PyvaultDenial(HTTPException):
    """Raised by the route checks; TokenRefreshMiddleware turns the response it renders
    into its own 401 (``scope`` None) or 403, the same as for a token the database
    refused."""

    def __init__(self, scope: str | None) -> None:
        self.marker = "401" if scope is None else f"403 {scope}"
        if scope is None:
            super().__init__(401, "unauthorized", headers={
                _MARKER: self.marker, "WWW-Authenticate": CHALLENGE_BARE.decode("ascii")})
        else:
            super().__init__(403, "insufficient_scope", headers={
                _MARKER: self.marker, "WWW-Authenticate": insufficient_challenge(scope)})
        self.scope = scope


def require_auth(conn_scope: Any) -> PyvaultAuth:
    """The request's PyvaultAuth; Anonymous for a request the middleware let through
    without a token; RuntimeError where the middleware did not run."""
    auth = pyvault_auth(conn_scope)
    if auth is not None:
        return auth
    state = request_state(conn_scope)
    if isinstance(state, MutableMapping) and "pyvault" in state:
        raise Anonymous
    raise RuntimeError(
        "pyvault-tokens: a scope check ran on a request that TokenRefreshMiddleware did "
        "not validate (is the middleware installed, or is this path exempt?)")


def checked_auth(conn_scope: Any, scopes: Iterable[str]) -> PyvaultAuth:
    """The request's PyvaultAuth if it holds every one of ``scopes``; else raises the
    denial (401 without a token, 403 naming the first missing scope)."""
    try:
        auth = require_auth(conn_scope)
    except Anonymous:
        raise PyvaultDenial(None) from None
    for scope in scopes:
        if scope not in auth.scope:
            raise PyvaultDenial(scope)
    return auth


def require_scope(scope: str) -> Callable[..., PyvaultAuth]:
    """A FastAPI dependency: the request's token must also hold ``scope``. Decided from the
    request the middleware already validated (no second query); otherwise the same 403 as
    the middleware's (a 401 for a request without a token where the middleware is
    optional). It raises an HTTPException whose response carries an internal marker
    header, and the middleware replaces that response with its own body (an app whose
    own HTTPException handler drops ``exc.headers`` gets its own body instead).
    Returns the request's PyvaultAuth::

        @app.post("/items")
        async def create(auth: PyvaultAuth = Depends(require_scope("api:write"))): ...

    ``pyvault_tokens.fastapi`` has the same check as a security dependency (OpenAPI).
    """
    register_scope(check_scope(scope, "require_scope(scope)"))

    def dependency(connection: HTTPConnection) -> PyvaultAuth:
        return checked_auth(connection.scope, (scope,))

    # FastAPI reads the signature: one parameter it knows how to fill, the connection.
    dependency.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [inspect.Parameter("connection", inspect.Parameter.POSITIONAL_OR_KEYWORD,
                           annotation=HTTPConnection)],
        return_annotation=PyvaultAuth,
    )
    dependency.__name__ = f"require_scope_{scope}"
    return dependency


def requires_scope(scope: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """The Starlette form of require_scope(): a decorator for endpoints (functions or
    HTTPEndpoint methods, sync or async). A request whose token lacks ``scope`` gets the
    middleware's 403 (a WebSocket handshake too, where the server supports denial
    responses; otherwise it is closed with 1008); one without a token (``optional``) its
    401::

        @requires_scope("api:write")
        async def create(request): ...

    Starlette's own ``@requires("api:write")`` works too (``request.auth.scopes`` holds
    the token's scopes), with Starlette's plain 403 instead of the middleware's.
    """
    register_scope(check_scope(scope, "requires_scope(scope)"))

    def connection_of(args: tuple[Any, ...], kwargs: dict[str, Any]) -> HTTPConnection:
        for value in (*args, *kwargs.values()):
            if isinstance(value, HTTPConnection):
                return value
        raise TypeError("requires_scope: the endpoint gets no Request or WebSocket")

    def denial(connection: HTTPConnection) -> Response | None:
        try:
            checked_auth(connection.scope, (scope,))
        except PyvaultDenial as exc:
            return Response(status_code=exc.status_code, headers={_MARKER: exc.marker})
        return None

    def decorator(endpoint: Callable[..., Any]) -> Callable[..., Any]:
        if inspect.iscoroutinefunction(endpoint):
            @functools.wraps(endpoint)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                connection = connection_of(args, kwargs)
                refused = denial(connection)
                if refused is None:
                    return await endpoint(*args, **kwargs)
                if connection.scope["type"] == "websocket":
                    websocket = cast(WebSocket, connection)
                    if "websocket.http.response" in (connection.scope.get("extensions") or {}):
                        await websocket.send_denial_response(refused)
                    else:
                        await websocket.close(code=1008)
                    return None
                return refused

            return async_wrapper

        @functools.wraps(endpoint)
        def sync_wrapper(*args: Any, **kwargs: Any) -> Any:
            refused = denial(connection_of(args, kwargs))
            return endpoint(*args, **kwargs) if refused is None else refused

        return sync_wrapper

    return decorator
