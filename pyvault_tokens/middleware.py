"""TokenRefreshMiddleware: validate the bearer token of every HTTP and WebSocket
request in PostgreSQL and hand a refreshed token back (``pyvault_tokens.asgi`` describes
the answers). The bytes it answers with are in ``pyvault_tokens.responses``, the
per-route checks whose denials it renders in ``pyvault_tokens.routes``."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterable
from datetime import datetime
from typing import Any

import psycopg
from starlette.authentication import AuthCredentials, UnauthenticatedUser

from pyvault_tokens import api, responses
from pyvault_tokens.display import is_well_formed_token, redact_tokens, rfc3339, token_prefix
from pyvault_tokens.identity import PyvaultAuth, PyvaultUser
from pyvault_tokens.request_metrics import RequestMetrics, request_metrics
from pyvault_tokens.responses import (
    DENIAL_MARKER,
    REFRESH_HEADERS,
    ASGIApp,
    Headers,
    Message,
    Receive,
    Refusal,
    Scope,
    Send,
    header,
    merge_expose,
    refusal_headers,
)
from pyvault_tokens.routes import ROUTE_SCOPES, check_scope

__all__ = ["VALIDATE_SQL", "TokenRefreshMiddleware"]

# The one SQL text, kept in pyvault_tokens.api (parameters: token, scope).
VALIDATE_SQL = api.VALIDATE_AND_REFRESH_SQL

# The logger keeps the name it had when all of this was pyvault_tokens.asgi.
_log = logging.getLogger("pyvault_tokens.asgi")


def _bearer_token(scope: Scope) -> str | None:
    """The token of ``Authorization: Bearer <token>``; None without the header or with
    another scheme; '' when the Bearer scheme has no token. The first header counts."""
    value = header(scope, b"authorization")
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
            and header(scope, b"origin") is not None
            and header(scope, b"access-control-request-method") is not None)


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


def _connection_lost(conn: Any, exc: BaseException) -> bool:
    """The query failed because its pooled connection is dead (a restart, a network cut):
    a fresh connection may well succeed. A pool timeout or a query error is final."""
    if conn is None or not isinstance(exc, psycopg.OperationalError):
        return False
    return bool(getattr(conn, "closed", False) or getattr(conn, "broken", False))


class TokenRefreshMiddleware:
    """Validate and refresh bearer tokens in PostgreSQL for every HTTP and WebSocket
    request of ``app``; ``pyvault_tokens.asgi`` lists the answers it gives.

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
                 logger: logging.Logger | logging.LoggerAdapter[logging.Logger] | None = None,
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
                               check_scope(required_scope,
                                            "TokenRefreshMiddleware: required_scope"))
        if isinstance(accepted_scopes, str):
            accepted_scopes = (accepted_scopes,)
        self.accepted_scopes = (None if accepted_scopes is None else tuple(
            check_scope(s, "TokenRefreshMiddleware: accepted_scopes") for s in accepted_scopes))
        if self.accepted_scopes is not None and not self.accepted_scopes:
            raise TypeError("TokenRefreshMiddleware: accepted_scopes is empty")
        self.optional = bool(optional)
        self.explain_errors = bool(explain_errors)
        self.confirm_invalid_on_primary = bool(confirm_invalid_on_primary)
        self.logger = logger if logger is not None else _log
        self._exempt = _Paths(exempt_paths)
        self._optional = _Paths(optional_paths)
        self.metrics: RequestMetrics | None = request_metrics(registry)
        self._pool_checks: dict[int, asyncio.Future[None]] = {}

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
                       error=redact_tokens(exc))
            return await self._query(self.pool, token, scope)
        if row["refresh_reason"] == "REFRESH_DEFERRED_READ_ONLY":
            try:
                return await self._query(self.pool, token, scope)
            except Exception as exc:
                # The token is valid; only its refresh (or first-use record) waits. A
                # primary outage must not turn a valid token into a failed request.
                self._emit(logging.WARNING, "primary unavailable, the replica's answer stands",
                           code=getattr(exc, "sqlstate", None) or type(exc).__name__,
                           error=redact_tokens(exc))
                return row
        if (not row["is_valid"] and row["refresh_reason"] != "INSUFFICIENT_SCOPE"
                and self.confirm_invalid_on_primary):
            return await self._query(self.pool, token, scope)
        return row

    def _scopes_to_try(self) -> tuple[str, ...]:
        if self.required_scope is not None:
            return (self.required_scope,)
        return self.accepted_scopes or tuple(ROUTE_SCOPES)

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
    def _invalid(self, reason: str | None, message: str | None) -> Refusal:
        return responses.invalid(reason, message, explain=self.explain_errors)

    def _insufficient(self, scope: str, reason: str | None, message: str | None) -> Refusal:
        return responses.insufficient(scope, reason, message, explain=self.explain_errors)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send, status: int,
                      body: bytes, extra: Headers) -> None:
        self._count(str(status))
        await responses.send_refusal(scope, receive, send, status, body, extra)

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
            await self._refuse(scope, receive, send, *responses.unauthorized())
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
                       error=redact_tokens(exc))
            await self._refuse(scope, receive, send, *responses.unavailable())
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
                           message=redact_tokens(row["message"]))
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
            refresh.append((b"x-token-expires", rfc3339(expires_at).encode("ascii")))
            refresh.append((b"x-refresh-reason", str(reason).encode("latin-1")))
            if new_token is not None:
                refresh.append((b"x-new-token", new_token.encode("ascii")))
            self._emit(logging.INFO, "token refreshed", token=prefix, reason=reason,
                       new_token=new_token is not None, expires_at=rfc3339(expires_at))
        elif reason == "REFRESH_FAILED":
            self._emit(logging.WARNING, "token refresh failed, the token stays valid",
                       token=prefix, message=redact_tokens(row["message"]))
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
        expose = scope["type"] == "http" and header(scope, b"origin") is not None

        def finish(headers: Iterable[tuple[bytes, bytes]]) -> Headers:
            drop = set(REFRESH_HEADERS) | {DENIAL_MARKER}
            if no_store:
                drop.add(b"cache-control")
            kept = [(n, v) for n, v in headers if bytes(n).lower() not in drop]
            if no_store:
                # A response that carries a new token is never cached, whatever the app says.
                kept.append((b"cache-control", b"no-store"))
            kept += refresh
            return merge_expose(kept) if expose else kept

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
                marker = next((v for n, v in headers if bytes(n).lower() == DENIAL_MARKER),
                              None)
                if marker is not None:
                    replaced = True
                    status, _, needed = bytes(marker).decode("latin-1").partition(" ")
                    if status == "401":
                        status_code, body, extra = responses.unauthorized()
                    else:
                        self._emit(logging.WARNING, "token lacks the required scope",
                                   token=prefix, scope=needed)
                        status_code, body, extra = self._insufficient(
                            needed, "INSUFFICIENT_SCOPE", "Token lacks the required scope")
                    count(str(status_code))
                    await send({"type": kind, "status": status_code,
                                "headers": finish(refusal_headers(body, extra))})
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
