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
"""

import asyncio
import contextlib
import functools
import inspect
import json
import logging
import re
import time
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from typing import Any

import psycopg
from starlette.authentication import AuthCredentials, BaseUser, UnauthenticatedUser

from pyvault_tokens import api
from pyvault_tokens.display import TOKEN_PREFIX, looks_like_token, token_prefix
from pyvault_tokens.request_metrics import RequestMetrics, request_metrics

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

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
Headers = list[tuple[bytes, bytes]]

# The one SQL text, kept in pyvault_tokens.api (parameters: token, scope).
VALIDATE_SQL = api.VALIDATE_AND_REFRESH_SQL

# The bodies and headers of clients/node/lib/middleware.js, byte for byte.
BODY_INVALID_TOKEN = b'{"error":"invalid_token"}'
BODY_INSUFFICIENT_SCOPE = b'{"error":"insufficient_scope"}'
BODY_UNAVAILABLE = b'{"error":"temporarily_unavailable"}'
BODY_UNAUTHORIZED = b'{"error":"unauthorized"}'
RETRY_AFTER_SECONDS = b"5"
CHALLENGE_INVALID = b'Bearer error="invalid_token"'
CHALLENGE_BARE = b"Bearer"
CONTENT_TYPE_JSON = b"application/json; charset=utf-8"

# The headers a browser app must be allowed to read (Access-Control-Expose-Headers).
# Pass them to CORSMiddleware(expose_headers=...) too when it sets expose headers itself
# and sits outside this middleware (see TokenRefreshMiddleware).
EXPOSE_HEADERS = ("X-New-Token", "X-Token-Expires", "X-Refresh-Reason")

# A route-level check (require_scope, requires_scope, pyvault_tokens.fastapi) answers with
# this header on a bare 401 or 403: "401", or "403 <scope>". The middleware replaces that
# response with its own, so the body is the same whatever renders the route's errors.
# Never sent to a client.
_DENIAL_MARKER = b"x-pyvault-denial"
_REFRESH_HEADERS = (b"x-new-token", b"x-token-expires", b"x-refresh-reason")
_EXPOSE = b"access-control-expose-headers"

# RFC 6750 scope-token characters: printable ASCII except space, '"' and '\'.
_SCOPE_TOKEN = re.compile(r"[\x21\x23-\x5B\x5D-\x7E]+")
_HEX = frozenset("0123456789abcdef")
_TOKEN_ANYWHERE = re.compile(r"ovt_prod_[0-9A-Za-z]{4}[0-9A-Za-z]*")

# Every scope a route check names (require_scope, requires_scope, fastapi.require), in
# the order they were declared: with required_scope=None the middleware accepts a token
# that holds any of them.
_ROUTE_SCOPES: dict[str, None] = {"api:read": None}

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


def _register_scope(scope: str) -> str:
    _ROUTE_SCOPES.setdefault(scope, None)
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


class PyvaultUser(BaseUser):
    """``request.user`` of a request with a valid token (Starlette's BaseUser), and
    ``request.auth`` is ``AuthCredentials(<the token's scopes>)``, as Starlette's
    AuthenticationMiddleware would set them, so ``starlette.authentication.requires``
    works. Without a token (``optional=True``) ``request.user`` is an
    ``UnauthenticatedUser``."""

    def __init__(self, auth: PyvaultAuth) -> None:
        self.auth = auth

    @property
    def is_authenticated(self) -> bool:
        return True

    @property
    def display_name(self) -> str:
        return self.auth.user_hk

    @property
    def identity(self) -> str:
        return self.auth.user_hk

    @property
    def user_hk(self) -> str:
        return self.auth.user_hk

    @property
    def tenant_hk(self) -> str:
        return self.auth.tenant_hk

    @property
    def scope(self) -> tuple[str, ...]:
        return self.auth.scope

    def __repr__(self) -> str:
        return f"PyvaultUser(user_hk={self.auth.user_hk!r}, tenant_hk={self.auth.tenant_hk!r})"


def pyvault_auth(conn_scope: Scope) -> PyvaultAuth | None:
    """The PyvaultAuth of a request's ASGI scope (or of a Starlette Request), if any."""
    raw = getattr(conn_scope, "scope", conn_scope)  # a Starlette Request has .scope
    state = raw.get("state") or {}
    value = state.get("pyvault") if isinstance(state, MutableMapping) else None
    return value if isinstance(value, PyvaultAuth) else None


def _header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope.get("headers") or ():
        if key.lower() == name:
            return bytes(value)
    return None


def _bearer_token(scope: Scope) -> str | None:
    """The token of ``Authorization: Bearer <token>``; None without the header or with
    another scheme; '' when the Bearer scheme has no token. The first header counts."""
    value = _header(scope, b"authorization")
    if value is None:
        return None
    scheme, _, rest = value.decode("latin-1").partition(" ")
    if scheme.lower() != "bearer":
        return None
    return rest.strip()


def _is_preflight(scope: Scope) -> bool:
    """A CORS preflight: OPTIONS with Origin and Access-Control-Request-Method. Browsers
    never send credentials on it, so it is never refused for lack of a token."""
    return (scope["type"] == "http" and scope.get("method") == "OPTIONS"
            and _header(scope, b"origin") is not None
            and _header(scope, b"access-control-request-method") is not None)


def _route_path(scope: Scope) -> str:
    path: str = scope.get("path") or "/"
    root = scope.get("root_path") or ""
    if root and path.startswith(root) and (len(path) == len(root) or path[len(root)] == "/"):
        return path[len(root):] or "/"
    return path


class _Paths:
    """Paths matched exactly or, for an entry ending in ``/``, every path under it."""

    def __init__(self, paths: Iterable[str] | str) -> None:
        if isinstance(paths, str):
            paths = (paths,)
        paths = tuple(paths)
        self.exact = frozenset(p for p in paths if not p.endswith("/"))
        self.prefixes = tuple(p for p in paths if p.endswith("/"))

    def match(self, scope: Scope) -> bool:
        if not self.exact and not self.prefixes:
            return False
        path = _route_path(scope)
        return path in self.exact or path.startswith(self.prefixes)


def _set_anonymous(scope: Scope) -> None:
    """A request the middleware let through without a token (``optional``)."""
    scope["user"] = UnauthenticatedUser()
    scope["auth"] = AuthCredentials()
    scope["state"] = {**(scope.get("state") or {}), "pyvault": None}


def _merge_expose(headers: Iterable[tuple[bytes, bytes]]) -> Headers:
    """Headers with one Access-Control-Expose-Headers: what was there plus ours."""
    names: list[str] = []
    kept: Headers = []
    for name, value in headers:
        if bytes(name).lower() == _EXPOSE:
            names += [n.strip() for n in bytes(value).decode("latin-1").split(",") if n.strip()]
        else:
            kept.append((name, value))
    seen = {n.lower() for n in names}
    names += [n for n in EXPOSE_HEADERS if n.lower() not in seen]
    kept.append((_EXPOSE, ", ".join(names).encode("latin-1")))
    return kept


def _connection_lost(conn: Any, exc: BaseException) -> bool:
    """The query failed because its pooled connection is dead (a restart, a network cut):
    a fresh connection may well succeed. A pool timeout or a query error is final."""
    if conn is None or not isinstance(exc, psycopg.OperationalError):
        return False
    return bool(getattr(conn, "closed", False) or getattr(conn, "broken", False))


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
    after a reuse can only be written on the primary).

    ``required_scope`` is the scope every token must hold (checked by the database).
    ``required_scope=None`` leaves scopes to the routes (``require_scope``,
    ``requires_scope``, ``pyvault_tokens.fastapi``): the token must then be valid and
    hold at least one of ``accepted_scopes`` (default: ``api:read`` and every scope a
    route check of this process names; the database is asked for each in turn until one
    is held, so the usual case is still one query).

    ``exempt_paths`` pass without a token or a query: an entry matches that path exactly
    or, when it ends in ``/``, every path under it; so do CORS preflights. ``optional``
    (or ``optional_paths``, matched the same way) lets a request without credentials
    through as anonymous (``request.user`` an ``UnauthenticatedUser``,
    ``request.state.pyvault`` None; a route check answers it with the same 401 as the
    middleware would); a request with a bad token is still refused.

    A request with an ``Origin`` header gets ``Access-Control-Expose-Headers`` listing
    ``EXPOSE_HEADERS``, merged with what the app (say, an inner CORSMiddleware) sets.
    An outer CORSMiddleware with its own ``expose_headers`` replaces ours: list
    ``EXPOSE_HEADERS`` in it.

    ``registry``: the prometheus_client registry for ``pyvault_requests_total`` and
    ``pyvault_validation_seconds`` (default: its global REGISTRY when prometheus_client
    is installed; False for none). ``logger`` defaults to
    ``logging.getLogger("pyvault_tokens.asgi")``.
    """

    def __init__(self, app: ASGIApp, pool: Any, *, replica_pool: Any = None,
                 required_scope: str | None = "api:read",
                 accepted_scopes: Iterable[str] | None = None,
                 optional: bool = False, optional_paths: Iterable[str] = (),
                 explain_errors: bool = False,
                 logger: logging.Logger | logging.LoggerAdapter | None = None,
                 exempt_paths: Iterable[str] = (),
                 confirm_invalid_on_primary: bool = True, registry: Any = None) -> None:
        if pool is None or not callable(getattr(pool, "connection", None)):
            raise TypeError("TokenRefreshMiddleware: pool must be an AsyncConnectionPool")
        if replica_pool is not None and not callable(getattr(replica_pool, "connection", None)):
            raise TypeError("TokenRefreshMiddleware: replica_pool must be an AsyncConnectionPool")
        self.app = app
        self.pool = pool
        self.replica_pool = replica_pool
        self.required_scope = (None if required_scope is None else
                               _check_scope(required_scope,
                                            "TokenRefreshMiddleware: required_scope"))
        if isinstance(accepted_scopes, str):
            accepted_scopes = (accepted_scopes,)
        self.accepted_scopes = (None if accepted_scopes is None else tuple(
            _check_scope(s, "TokenRefreshMiddleware: accepted_scopes") for s in accepted_scopes))
        if self.accepted_scopes is not None and not self.accepted_scopes:
            raise TypeError("TokenRefreshMiddleware: accepted_scopes is empty")
        self.optional = bool(optional)
        self.explain_errors = bool(explain_errors)
        self.confirm_invalid_on_primary = bool(confirm_invalid_on_primary)
        self.logger = logger if logger is not None else _log
        self._exempt = _Paths(exempt_paths)
        self._optional = _Paths(optional_paths)
        self.metrics: RequestMetrics | None = request_metrics(registry)
        self._pool_checks: dict[int, asyncio.Future] = {}

    # -- logging: never a whole token --------------------------------------------------
    def _emit(self, level: int, what: str, **fields: Any) -> None:
        if not self.logger.isEnabledFor(level):
            return
        text = " ".join(f"{k}={v}" for k, v in fields.items())
        # logging itself never raises from a failing handler (Handler.handleError).
        self.logger.log(level, "pyvault-tokens: %s %s", what, text, extra={"pyvault": fields})

    def _count(self, outcome: str) -> None:
        if self.metrics is not None:
            self.metrics.count(outcome)

    # -- the database ------------------------------------------------------------------
    async def _check_pool(self, pool: Any) -> None:
        """Let the pool test its idle connections (psycopg_pool's ``check()``), once for
        all the requests that found a dead connection at the same time."""
        check = getattr(pool, "check", None)
        if not callable(check):
            return
        loop = asyncio.get_running_loop()
        running = self._pool_checks.get(id(pool))
        if running is None or running.done() or running.get_loop() is not loop:
            running = self._pool_checks[id(pool)] = asyncio.ensure_future(check())
        with contextlib.suppress(Exception):
            await asyncio.shield(running)

    async def _query(self, pool: Any, token: str, scope: str) -> dict[str, Any]:
        """One validation; once more on a fresh connection if the pooled one was dead."""
        for attempt in (1, 2):
            used = None
            try:
                async with pool.connection() as conn:
                    used = conn
                    return await api.validate_and_refresh_async(conn, token, scope)
            except Exception as exc:
                if attempt == 2 or not _connection_lost(used, exc):
                    raise
                self._emit(logging.WARNING, "database connection lost, validating again",
                           token=token_prefix(token),
                           code=getattr(exc, "sqlstate", None) or type(exc).__name__)
                await self._check_pool(pool)
        raise AssertionError("unreachable")  # pragma: no cover

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

    def _scopes_to_try(self) -> tuple[str, ...]:
        if self.required_scope is not None:
            return (self.required_scope,)
        return self.accepted_scopes or tuple(_ROUTE_SCOPES)

    async def _validate_any(self, token: str) -> tuple[dict[str, Any], str]:
        """The database's answer for the first scope the token holds, and the scope(s)
        asked for (for the 403 challenge when it holds none)."""
        scopes = self._scopes_to_try()
        for scope in scopes:
            row = await self._validate(token, scope)
            # A scope refusal is decided after every other check and writes nothing.
            if row["refresh_reason"] != "INSUFFICIENT_SCOPE":
                break
        return row, " ".join(scopes)

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
    def _unauthorized():
        # RFC 6750 3.1: a request without credentials gets a challenge without an error.
        return 401, BODY_UNAUTHORIZED, [(b"www-authenticate", CHALLENGE_BARE)]

    @staticmethod
    def _headers(body: bytes, extra: Headers) -> Headers:
        return [(b"content-type", CONTENT_TYPE_JSON),
                (b"content-length", str(len(body)).encode("ascii")),
                (b"cache-control", b"no-store"), *extra]

    async def _refuse(self, scope: Scope, receive: Receive, send: Send, status: int,
                      body: bytes, extra: Headers) -> None:
        self._count(str(status))
        headers = self._headers(body, extra)
        if scope["type"] == "http":
            if _header(scope, b"origin") is not None:
                headers = _merge_expose(headers)
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
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        if self._exempt.match(scope) or _is_preflight(scope):
            # As Starlette's AuthenticationMiddleware: request.user always works.
            scope.setdefault("user", UnauthenticatedUser())
            scope.setdefault("auth", AuthCredentials())
            await self.app(scope, receive, send)
            return

        token = _bearer_token(scope)
        if token is None:
            if self.optional or self._optional.match(scope):
                _set_anonymous(scope)
                await self._pass(scope, receive, send, [], "(none)", no_store=False,
                                 outcome="anonymous")
                return
            await self._refuse(scope, receive, send, *self._unauthorized())
            return
        if not is_well_formed_token(token):
            # Nothing of a malformed token is logged: it may be short enough to be all prefix.
            self._emit(logging.WARNING, "token rejected", reason="MALFORMED", length=len(token))
            status, body, extra = self._invalid("TOKEN_INVALID", "Token format is invalid")
            await self._refuse(scope, receive, send, status, body, extra)
            return
        prefix = token_prefix(token)

        started = time.perf_counter()
        try:
            row, asked = await self._validate_any(token)
        except Exception as exc:
            # Documented boundary: a database failure is a 503 without details, never a 500.
            self._observe(started)
            self._emit(logging.ERROR, "token validation unavailable", token=prefix,
                       code=getattr(exc, "sqlstate", None) or type(exc).__name__,
                       error=_redact(exc))
            await self._refuse(scope, receive, send, 503, BODY_UNAVAILABLE,
                               [(b"retry-after", RETRY_AFTER_SECONDS)])
            return
        self._observe(started)

        reason = row["refresh_reason"]
        if not row["is_valid"]:
            if reason == "INSUFFICIENT_SCOPE":
                self._emit(logging.WARNING, "token lacks the required scope", token=prefix,
                           scope=asked)
                refusal = self._insufficient(asked, reason, row["message"])
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
        scope["user"] = PyvaultUser(auth)
        scope["auth"] = AuthCredentials(list(auth.scope))

        new_token: str | None = row["new_token"]
        refresh: Headers = []
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

        await self._pass(scope, receive, send, refresh, prefix, no_store=new_token is not None,
                         outcome="refreshed" if refresh else "ok")

    def _observe(self, started: float) -> None:
        if self.metrics is not None:
            self.metrics.observe(time.perf_counter() - started)

    async def _pass(self, scope: Scope, receive: Receive, send: Send, refresh: Headers,
                    prefix: str, *, no_store: bool, outcome: str) -> None:
        """Run the app; its response gets the refresh headers, and a route check's
        marked denial becomes the middleware's own 401 or 403."""
        replaced = False
        counted = False
        expose = scope["type"] == "http" and _header(scope, b"origin") is not None

        def finish(headers: Iterable[tuple[bytes, bytes]]) -> Headers:
            drop = set(_REFRESH_HEADERS) | {_DENIAL_MARKER}
            if no_store:
                drop.add(b"cache-control")
            kept = [(n, v) for n, v in headers if bytes(n).lower() not in drop]
            if no_store:
                # A response that carries a new token is never cached, whatever the app says.
                kept.append((b"cache-control", b"no-store"))
            kept += refresh
            return _merge_expose(kept) if expose else kept

        def count(what: str) -> None:
            nonlocal counted
            if not counted:
                counted = True
                self._count(what)

        async def wrapped(message: Message) -> None:
            nonlocal replaced
            kind = message["type"]
            if replaced:
                return  # the app's own body of a denial that the middleware answered itself
            if kind in ("http.response.start", "websocket.http.response.start"):
                headers = list(message.get("headers") or ())
                marker = next((v for n, v in headers if bytes(n).lower() == _DENIAL_MARKER),
                              None)
                if marker is not None:
                    replaced = True
                    status, _, needed = bytes(marker).decode("latin-1").partition(" ")
                    if status == "401":
                        status_code, body, extra = self._unauthorized()
                    else:
                        self._emit(logging.WARNING, "token lacks the required scope",
                                   token=prefix, scope=needed)
                        status_code, body, extra = self._insufficient(
                            needed, "INSUFFICIENT_SCOPE", "Token lacks the required scope")
                    count(str(status_code))
                    await send({"type": kind, "status": status_code,
                                "headers": finish(self._headers(body, extra))})
                    await send({"type": kind.replace(".start", ".body"), "body": body})
                    return
                count(outcome)
                if refresh or expose:
                    message = {**message, "headers": finish(headers)}
            elif kind == "websocket.accept":
                count(outcome)
                if refresh:
                    message = {**message, "headers": finish(message.get("headers") or ())}
            await send(message)

        try:
            await self.app(scope, receive, wrapped)
        finally:
            count(outcome)


# -- per-route checks ------------------------------------------------------------------

class _Anonymous(Exception):
    """A route check ran on a request that passed without a token (``optional``)."""


def _require_auth(conn_scope: Scope) -> PyvaultAuth:
    auth = pyvault_auth(conn_scope)
    if auth is not None:
        return auth
    raw = getattr(conn_scope, "scope", conn_scope)
    state = raw.get("state")
    if isinstance(state, MutableMapping) and "pyvault" in state:
        raise _Anonymous
    raise RuntimeError(
        "pyvault-tokens: a scope check ran on a request that TokenRefreshMiddleware did "
        "not validate (is the middleware installed, or is this path exempt?)")


@functools.cache
def _denial_error() -> type:
    from starlette.exceptions import HTTPException

    class PyvaultDenial(HTTPException):
        """Raised by the route checks; TokenRefreshMiddleware turns the response it
        renders into its own 401 or 403, the same as for a token the database refused."""

        def __init__(self, scope: str | None) -> None:
            if scope is None:
                super().__init__(401, "unauthorized", headers={
                    _DENIAL_MARKER.decode("ascii"): "401",
                    "WWW-Authenticate": CHALLENGE_BARE.decode("ascii")})
            else:
                super().__init__(403, "insufficient_scope", headers={
                    _DENIAL_MARKER.decode("ascii"): f"403 {scope}",
                    "WWW-Authenticate": f'Bearer error="insufficient_scope", scope="{scope}"',
                })
            self.scope = scope

    return PyvaultDenial


def _checked_auth(conn_scope: Scope, scopes: Iterable[str]) -> PyvaultAuth:
    """The request's PyvaultAuth if it holds every one of ``scopes``; else raises the
    denial (401 without a token, 403 naming the first missing scope)."""
    try:
        auth = _require_auth(conn_scope)
    except _Anonymous:
        raise _denial_error()(None) from None
    for scope in scopes:
        if scope not in auth.scope:
            raise _denial_error()(scope)
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
    _register_scope(_check_scope(scope, "require_scope(scope)"))
    from starlette.requests import HTTPConnection

    def dependency(connection: HTTPConnection) -> PyvaultAuth:
        return _checked_auth(connection.scope, (scope,))

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
    _register_scope(_check_scope(scope, "requires_scope(scope)"))

    def connection_of(args: tuple, kwargs: dict) -> Any:
        from starlette.requests import HTTPConnection

        for value in (*args, *kwargs.values()):
            if isinstance(value, HTTPConnection):
                return value
        raise TypeError("requires_scope: the endpoint gets no Request or WebSocket")

    def denial(connection: Any) -> Any:
        from starlette.responses import Response

        try:
            _checked_auth(connection.scope, (scope,))
        except _denial_error() as exc:
            return Response(status_code=exc.status_code,
                            headers={_DENIAL_MARKER.decode("ascii"):
                                     exc.headers[_DENIAL_MARKER.decode("ascii")]})
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
