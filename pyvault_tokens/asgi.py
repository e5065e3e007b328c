"""ASGI middleware: validate ``Authorization: Bearer <token>`` in PostgreSQL, hand a
refreshed token back in ``X-New-Token``.

Pure ASGI (no framework needed), so it wraps Starlette, FastAPI or any other ASGI app.
Every request costs one call of ``auth.validate_and_refresh_api_token`` through a
``psycopg_pool.AsyncConnectionPool``; the database decides validity, scope and refresh.
The HTTP side behaves exactly like the Express middleware in ``clients/node`` (same
status codes, bodies, headers and replica routing), so a client cannot tell them apart::

    pool = AsyncConnectionPool(url, open=False, timeout=2)   # opened in the app's lifespan
    app.add_middleware(TokenRefreshMiddleware, pool=pool, exempt_paths=("/health",))

    @app.post("/items", dependencies=[Depends(require_scope("api:write"))])
    async def create_item(request: Request):
        auth = request.state.pyvault          # PyvaultAuth: user_hk, tenant_hk, scope, ...

Refusals (JSON, ``Cache-Control: no-store``), byte for byte the Node middleware's:

- no ``Authorization`` header, or another scheme: 401 ``{"error":"unauthorized"}``,
  ``WWW-Authenticate: Bearer``;
- any invalid token (malformed, unknown, expired, revoked, reused): 401
  ``{"error":"invalid_token"}``, ``WWW-Authenticate: Bearer error="invalid_token"``;
  a malformed token is refused without a query;
- a valid token without the required scope: 403 ``{"error":"insufficient_scope"}``,
  ``WWW-Authenticate: Bearer error="insufficient_scope", scope="<scope>"``;
- the database unreachable or failing: 503 ``{"error":"temporarily_unavailable"}``,
  ``Retry-After: 5``, never a detail.

With ``explain_errors=True`` the bodies also carry ``reason`` and ``message`` (for
development). Log lines show at most a token's prefix (``ovt_prod_1a2b…``); nothing of
a malformed token but its length.
"""

import functools
import inspect
import json
import logging
import re
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from typing import Any

from psycopg.rows import dict_row

from pyvault_tokens.display import TOKEN_PREFIX, looks_like_token, token_prefix

__all__ = [
    "VALIDATE_SQL",
    "PyvaultAuth",
    "TokenRefreshMiddleware",
    "is_well_formed_token",
    "pyvault_auth",
    "require_scope",
    "requires_scope",
]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

VALIDATE_SQL = (
    "SELECT * FROM auth.validate_and_refresh_api_token("
    "p_token => %(t)s::text, p_required_scope => %(s)s::text)"
)

# The bodies and headers of clients/node/lib/middleware.js, byte for byte.
BODY_INVALID_TOKEN = b'{"error":"invalid_token"}'
BODY_INSUFFICIENT_SCOPE = b'{"error":"insufficient_scope"}'
BODY_UNAVAILABLE = b'{"error":"temporarily_unavailable"}'
BODY_UNAUTHORIZED = b'{"error":"unauthorized"}'
RETRY_AFTER_SECONDS = b"5"
CHALLENGE_INVALID = b'Bearer error="invalid_token"'
CONTENT_TYPE_JSON = b"application/json; charset=utf-8"

# A route-level scope check (require_scope, requires_scope) answers with this header on
# a bare 403; the middleware replaces that response with its own 403, so the body is the
# same whatever renders the route's errors. Never sent to a client.
_SCOPE_MARKER = b"x-pyvault-insufficient-scope"
_REFRESH_HEADERS = (b"x-new-token", b"x-token-expires", b"x-refresh-reason")

# RFC 6750 scope-token characters: printable ASCII except space, '"' and '\'.
_SCOPE_TOKEN = re.compile(r"[\x21\x23-\x5B\x5D-\x7E]+")
_HEX = frozenset("0123456789abcdef")
_TOKEN_ANYWHERE = re.compile(r"ovt_prod_[0-9A-Za-z]{4}[0-9A-Za-z]*")

_log = logging.getLogger("pyvault_tokens.asgi")


def is_well_formed_token(token: str | None) -> bool:
    """``ovt_prod_`` followed by 64 lower-case hex characters: the check that costs no query."""
    return looks_like_token(token) and _HEX.issuperset(token[len(TOKEN_PREFIX):])  # type: ignore[index]


def _redact(text: object) -> str | None:
    """Free text (an error message, say) with anything token-like cut to its prefix."""
    if text is None:
        return None
    return _TOKEN_ANYWHERE.sub(lambda m: token_prefix(m.group(0)), str(text))


def _check_scope(scope: str, what: str) -> str:
    if not isinstance(scope, str) or not _SCOPE_TOKEN.fullmatch(scope):
        raise TypeError(f"{what} must be a non-empty scope name such as 'api:read'")
    return scope


def _rfc3339(value: datetime) -> str:
    """The form JavaScript's toISOString() gives: UTC, milliseconds, 'Z'."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True, slots=True)
class PyvaultAuth:
    """What a validated request carries in ``scope["state"]["pyvault"]``
    (``request.state.pyvault`` in Starlette). Attribute or item access both work."""

    user_hk: str
    """The user's hash key, lower-case hex."""
    tenant_hk: str
    """The tenant's hash key, lower-case hex."""
    scope: tuple[str, ...]
    expires_at: datetime
    """When the token expires; after a refresh, when the new (or extended) token expires."""
    was_refreshed: bool
    refresh_reason: str

    def __getitem__(self, key: str) -> Any:
        if key not in self.__dataclass_fields__:
            raise KeyError(key)
        return getattr(self, key)

    def has_scope(self, scope: str) -> bool:
        return scope in self.scope

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly: lists and an RFC 3339 expiry."""
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["scope"] = list(self.scope)
        out["expires_at"] = _rfc3339(self.expires_at)
        return out


def pyvault_auth(conn_scope: Scope) -> PyvaultAuth | None:
    """The PyvaultAuth of a request's ASGI scope (or of a Starlette Request), if any."""
    raw = getattr(conn_scope, "scope", conn_scope)  # a Starlette Request has .scope
    state = raw.get("state") or {}
    value = state.get("pyvault") if isinstance(state, MutableMapping) else None
    return value if isinstance(value, PyvaultAuth) else None


def _bearer_token(scope: Scope) -> str | None:
    """The token of ``Authorization: Bearer <token>``; None without the header or with
    another scheme; '' when the Bearer scheme has no token. The first header counts."""
    for name, value in scope.get("headers") or ():
        if name.lower() == b"authorization":
            header = value.decode("latin-1")
            scheme, _, rest = header.partition(" ")
            if scheme.lower() != "bearer":
                return None
            return rest.strip()
    return None


def _route_path(scope: Scope) -> str:
    path: str = scope.get("path") or "/"
    root = scope.get("root_path") or ""
    if root and path.startswith(root) and (len(path) == len(root) or path[len(root)] == "/"):
        return path[len(root):] or "/"
    return path


class TokenRefreshMiddleware:
    """Validate and refresh bearer tokens in PostgreSQL for every HTTP and WebSocket
    request of ``app``; see the module docstring for the answers it gives.

    ``pool`` and ``replica_pool`` are ``psycopg_pool.AsyncConnectionPool`` (anything with
    an async ``connection()`` context manager); open them in the app's lifespan and give
    them a short ``timeout`` so that an unreachable database answers 503 quickly.
    With ``replica_pool`` validation runs there, and the primary is asked in the same
    request when the replica defers a refresh (``REFRESH_DEFERRED_READ_ONLY``), when it
    fails, and, unless ``confirm_invalid_on_primary`` is false, before a token is refused
    (a token rotated a moment ago may not have reached the replica, and the revocation
    after a reuse can only be written on the primary). ``exempt_paths`` pass without a
    token: an entry matches that path exactly or, when it ends in ``/``, every path under
    it. ``logger`` defaults to ``logging.getLogger("pyvault_tokens.asgi")``.
    """

    def __init__(self, app: ASGIApp, pool: Any, *, replica_pool: Any = None,
                 required_scope: str = "api:read", explain_errors: bool = False,
                 logger: logging.Logger | logging.LoggerAdapter | None = None,
                 exempt_paths: Iterable[str] = (),
                 confirm_invalid_on_primary: bool = True) -> None:
        if pool is None or not callable(getattr(pool, "connection", None)):
            raise TypeError("TokenRefreshMiddleware: pool must be an AsyncConnectionPool")
        if replica_pool is not None and not callable(getattr(replica_pool, "connection", None)):
            raise TypeError("TokenRefreshMiddleware: replica_pool must be an AsyncConnectionPool")
        self.app = app
        self.pool = pool
        self.replica_pool = replica_pool
        self.required_scope = _check_scope(required_scope, "TokenRefreshMiddleware: required_scope")
        self.explain_errors = bool(explain_errors)
        self.confirm_invalid_on_primary = bool(confirm_invalid_on_primary)
        self.logger = logger if logger is not None else _log
        if isinstance(exempt_paths, str):
            exempt_paths = (exempt_paths,)
        paths = tuple(exempt_paths)
        self._exempt_exact = frozenset(p for p in paths if not p.endswith("/"))
        self._exempt_prefixes = tuple(p for p in paths if p.endswith("/"))

    # -- logging: never a whole token --------------------------------------------------
    def _emit(self, level: int, what: str, **fields: Any) -> None:
        if not self.logger.isEnabledFor(level):
            return
        text = " ".join(f"{k}={v}" for k, v in fields.items())
        # logging itself never raises from a failing handler (Handler.handleError).
        self.logger.log(level, "pyvault-tokens: %s %s", what, text, extra={"pyvault": fields})

    # -- the database ------------------------------------------------------------------
    @staticmethod
    async def _query(pool: Any, token: str, scope: str) -> dict[str, Any]:
        async with pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(VALIDATE_SQL, {"t": token, "s": scope})
            row = await cur.fetchone()
        if row is None:
            raise RuntimeError("auth.validate_and_refresh_api_token returned no row")
        return row

    async def _validate(self, token: str, scope: str) -> dict[str, Any]:
        """The replica's answer when there is one and it is final, else the primary's."""
        if self.replica_pool is None:
            return await self._query(self.pool, token, scope)
        try:
            row = await self._query(self.replica_pool, token, scope)
        except Exception as exc:
            self._emit(logging.WARNING, "replica unavailable, validating on the primary",
                       code=getattr(exc, "sqlstate", None) or type(exc).__name__,
                       error=_redact(exc))
            return await self._query(self.pool, token, scope)
        if row["refresh_reason"] == "REFRESH_DEFERRED_READ_ONLY":
            try:
                return await self._query(self.pool, token, scope)
            except Exception as exc:
                # The token is valid; only its refresh (or first-use record) waits. A
                # primary outage must not turn a valid token into a failed request.
                self._emit(logging.WARNING, "primary unavailable, the replica's answer stands",
                           code=getattr(exc, "sqlstate", None) or type(exc).__name__,
                           error=_redact(exc))
                return row
        if (not row["is_valid"] and row["refresh_reason"] != "INSUFFICIENT_SCOPE"
                and self.confirm_invalid_on_primary):
            return await self._query(self.pool, token, scope)
        return row

    # -- responses ---------------------------------------------------------------------
    def _body(self, plain: bytes, error: str, reason: str | None, message: str | None) -> bytes:
        if not self.explain_errors:
            return plain
        return json.dumps({"error": error, "reason": reason, "message": message},
                          separators=(",", ":"), ensure_ascii=False).encode("utf-8")

    def _invalid(self, reason: str | None, message: str | None):
        return 401, self._body(BODY_INVALID_TOKEN, "invalid_token", reason or "TOKEN_INVALID",
                               message), [(b"www-authenticate", CHALLENGE_INVALID)]

    def _insufficient(self, scope: str, reason: str | None, message: str | None):
        challenge = f'Bearer error="insufficient_scope", scope="{scope}"'.encode("latin-1")
        return 403, self._body(BODY_INSUFFICIENT_SCOPE, "insufficient_scope", reason,
                               message), [(b"www-authenticate", challenge)]

    @staticmethod
    def _headers(body: bytes, extra: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
        return [(b"content-type", CONTENT_TYPE_JSON),
                (b"content-length", str(len(body)).encode("ascii")),
                (b"cache-control", b"no-store"), *extra]

    async def _refuse(self, scope: Scope, receive: Receive, send: Send, status: int,
                      body: bytes, extra: list[tuple[bytes, bytes]]) -> None:
        headers = self._headers(body, extra)
        if scope["type"] == "http":
            await send({"type": "http.response.start", "status": status, "headers": headers})
            await send({"type": "http.response.body", "body": body})
            return
        # WebSocket: answer the handshake with the same HTTP response where the server
        # supports it (ASGI's websocket.http.response extension), else close with 1008.
        message = await receive()
        if message["type"] != "websocket.connect":
            return
        if "websocket.http.response" in (scope.get("extensions") or {}):
            await send({"type": "websocket.http.response.start", "status": status,
                        "headers": headers})
            await send({"type": "websocket.http.response.body", "body": body})
        else:
            await send({"type": "websocket.close", "code": 1008})

    # -- the request -------------------------------------------------------------------
    def _exempt(self, scope: Scope) -> bool:
        if not self._exempt_exact and not self._exempt_prefixes:
            return False
        path = _route_path(scope)
        return path in self._exempt_exact or path.startswith(self._exempt_prefixes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or self._exempt(scope):
            await self.app(scope, receive, send)
            return

        token = _bearer_token(scope)
        if token is None:
            # RFC 6750 3.1: a request without credentials gets a challenge without an error.
            await self._refuse(scope, receive, send, 401, BODY_UNAUTHORIZED,
                               [(b"www-authenticate", b"Bearer")])
            return
        if not is_well_formed_token(token):
            # Nothing of a malformed token is logged: it may be short enough to be all prefix.
            self._emit(logging.WARNING, "token rejected", reason="MALFORMED", length=len(token))
            status, body, extra = self._invalid("TOKEN_INVALID", "Token format is invalid")
            await self._refuse(scope, receive, send, status, body, extra)
            return
        prefix = token_prefix(token)

        try:
            row = await self._validate(token, self.required_scope)
        except Exception as exc:
            # Documented boundary: a database failure is a 503 without details, never a 500.
            self._emit(logging.ERROR, "token validation unavailable", token=prefix,
                       code=getattr(exc, "sqlstate", None) or type(exc).__name__,
                       error=_redact(exc))
            await self._refuse(scope, receive, send, 503, BODY_UNAVAILABLE,
                               [(b"retry-after", RETRY_AFTER_SECONDS)])
            return

        reason = row["refresh_reason"]
        if not row["is_valid"]:
            if reason == "INSUFFICIENT_SCOPE":
                self._emit(logging.WARNING, "token lacks the required scope", token=prefix,
                           scope=self.required_scope)
                refusal = self._insufficient(self.required_scope, reason, row["message"])
            else:
                self._emit(logging.WARNING, "token rejected", token=prefix, reason=reason,
                           message=_redact(row["message"]))
                refusal = self._invalid(reason, row["message"])
            await self._refuse(scope, receive, send, *refusal)
            return

        expires_at: datetime = row["expires_at"]
        auth = PyvaultAuth(
            user_hk=bytes(row["user_hk"]).hex(),
            tenant_hk=bytes(row["tenant_hk"]).hex(),
            scope=tuple(row["scope"] or ()),
            expires_at=expires_at,
            was_refreshed=bool(row["was_refreshed"]),
            refresh_reason=reason,
        )
        # A new dict for this request: the server's "state" is meant to be a per-request
        # copy of the lifespan state, but the auth must never leak into a shared one.
        scope["state"] = {**(scope.get("state") or {}), "pyvault": auth}

        new_token: str | None = row["new_token"]
        refresh: list[tuple[bytes, bytes]] = []
        if row["was_refreshed"] or new_token is not None:
            refresh.append((b"x-token-expires", _rfc3339(expires_at).encode("ascii")))
            refresh.append((b"x-refresh-reason", str(reason).encode("latin-1")))
            if new_token is not None:
                refresh.append((b"x-new-token", new_token.encode("ascii")))
            self._emit(logging.INFO, "token refreshed", token=prefix, reason=reason,
                       new_token=new_token is not None, expires_at=_rfc3339(expires_at))
        elif reason == "REFRESH_FAILED":
            self._emit(logging.WARNING, "token refresh failed, the token stays valid",
                       token=prefix, message=_redact(row["message"]))
        elif reason == "REFRESH_DEFERRED_READ_ONLY":
            self._emit(logging.INFO, "token refresh deferred: the database is read-only",
                       token=prefix)

        wrapped = self._wrap_send(send, refresh, prefix, no_store=new_token is not None)
        await self.app(scope, receive, wrapped)

    def _wrap_send(self, send: Send, refresh: list[tuple[bytes, bytes]], prefix: str, *,
                   no_store: bool) -> Send:
        replaced = False

        def with_refresh(headers: Iterable[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
            drop = set(_REFRESH_HEADERS) | {_SCOPE_MARKER}
            if no_store:
                drop.add(b"cache-control")
            kept = [(n, v) for n, v in headers if bytes(n).lower() not in drop]
            if no_store:
                # A response that carries a new token is never cached, whatever the app says.
                kept.append((b"cache-control", b"no-store"))
            return kept + refresh

        async def wrapped(message: Message) -> None:
            nonlocal replaced
            kind = message["type"]
            if replaced:
                return  # the app's own body of a 403 that the middleware answered itself
            if kind in ("http.response.start", "websocket.http.response.start"):
                headers = list(message.get("headers") or ())
                marker = next((v for n, v in headers if bytes(n).lower() == _SCOPE_MARKER), None)
                if marker is not None:
                    replaced = True
                    needed = bytes(marker).decode("latin-1")
                    self._emit(logging.WARNING, "token lacks the required scope", token=prefix,
                               scope=needed)
                    _, body, extra = self._insufficient(needed, "INSUFFICIENT_SCOPE",
                                                        "Token lacks the required scope")
                    start = kind
                    body_kind = start.replace(".start", ".body")
                    await send({"type": start, "status": 403,
                                "headers": with_refresh(self._headers(body, extra))})
                    await send({"type": body_kind, "body": body})
                    return
                if refresh:
                    message = {**message, "headers": with_refresh(headers)}
            elif kind == "websocket.accept" and refresh:
                message = {**message, "headers": with_refresh(message.get("headers") or ())}
            await send(message)

        return wrapped


# -- per-route scopes ------------------------------------------------------------------

def _require_auth(conn_scope: Scope) -> PyvaultAuth:
    auth = pyvault_auth(conn_scope)
    if auth is None:
        raise RuntimeError(
            "pyvault-tokens: a scope check ran on a request that TokenRefreshMiddleware did "
            "not validate (is the middleware installed, or is this path exempt?)")
    return auth


@functools.cache
def _insufficient_scope_error() -> type:
    from starlette.exceptions import HTTPException

    class InsufficientScope(HTTPException):
        """Raised by require_scope(); TokenRefreshMiddleware turns the 403 it renders
        into its own 403 body, the same as for a token the database refused."""

        def __init__(self, scope: str) -> None:
            super().__init__(403, "insufficient_scope", headers={
                _SCOPE_MARKER.decode("ascii"): scope,
                "WWW-Authenticate": f'Bearer error="insufficient_scope", scope="{scope}"',
            })
            self.scope = scope

    return InsufficientScope


def require_scope(scope: str) -> Callable[..., PyvaultAuth]:
    """A FastAPI dependency: the request's token must also hold ``scope``. Decided from the
    request the middleware already validated (no second query); otherwise the same 403 as
    the middleware's. It raises an HTTPException whose response carries an internal marker
    header, and the middleware replaces that response with its own 403 body (an app whose
    own HTTPException handler drops ``exc.headers`` gets its own 403 body instead).
    Returns the request's PyvaultAuth::

        @app.post("/items")
        async def create(auth: PyvaultAuth = Depends(require_scope("api:write"))): ...
    """
    _check_scope(scope, "require_scope(scope)")
    from starlette.requests import HTTPConnection

    error = _insufficient_scope_error()

    def dependency(connection: HTTPConnection) -> PyvaultAuth:
        auth = _require_auth(connection.scope)
        if scope not in auth.scope:
            raise error(scope)
        return auth

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
    responses; otherwise it is closed with 1008)::

        @requires_scope("api:write")
        async def create(request): ...
    """
    _check_scope(scope, "requires_scope(scope)")

    def connection_of(args: tuple, kwargs: dict) -> Any:
        from starlette.requests import HTTPConnection

        for value in (*args, *kwargs.values()):
            if isinstance(value, HTTPConnection):
                return value
        raise TypeError("requires_scope: the endpoint gets no Request or WebSocket")

    def denial(connection: Any) -> Any:
        from starlette.responses import Response

        if scope in _require_auth(connection.scope).scope:
            return None
        return Response(status_code=403, headers={_SCOPE_MARKER.decode("ascii"): scope})

    def decorator(endpoint: Callable[..., Any]) -> Callable[..., Any]:
        if inspect.iscoroutinefunction(endpoint):
            @functools.wraps(endpoint)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                connection = connection_of(args, kwargs)
                refused = denial(connection)
                if refused is None:
                    return await endpoint(*args, **kwargs)
                if connection.scope["type"] == "websocket":
                    if "websocket.http.response" in (connection.scope.get("extensions") or {}):
                        await connection.send_denial_response(refused)
                    else:
                        await connection.close(code=1008)
                    return None
                return refused

            return async_wrapper

        @functools.wraps(endpoint)
        def sync_wrapper(*args: Any, **kwargs: Any) -> Any:
            refused = denial(connection_of(args, kwargs))
            return endpoint(*args, **kwargs) if refused is None else refused

        return sync_wrapper

    return decorator

