"""The HTTP answers of the ASGI layer, byte for byte those of ``clients/node``.

The refusal bodies and challenges (401 ``unauthorized`` and ``invalid_token``, 403
``insufficient_scope``, 503 ``temporarily_unavailable``), the headers every refusal
carries (JSON, ``Cache-Control: no-store``), the CORS expose list, and the marker header
by which a route check hands its denial to the middleware. The Node/Python parity test
compares these bytes with ``clients/node/lib/middleware.js``.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any

__all__ = [
    "BODY_INSUFFICIENT_SCOPE",
    "BODY_INVALID_TOKEN",
    "BODY_UNAUTHORIZED",
    "BODY_UNAVAILABLE",
    "EXPOSE_HEADERS",
    "RETRY_AFTER_SECONDS",
    "insufficient",
    "invalid",
    "merge_expose",
    "refusal_headers",
    "send_refusal",
    "unauthorized",
    "unavailable",
]

# ASGI's shapes, as the spec describes them (asgiref's typing is not a dependency).
Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
Headers = list[tuple[bytes, bytes]]
# A refusal: status, body, and the headers beyond the JSON ones (the challenge, Retry-After).
Refusal = tuple[int, bytes, Headers]

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
# and sits outside the middleware (see TokenRefreshMiddleware).
EXPOSE_HEADERS = ("X-New-Token", "X-Token-Expires", "X-Refresh-Reason")

# A route-level check (require_scope, requires_scope, pyvault_tokens.fastapi) answers with
# this header on a bare 401 or 403: "401", or "403 <scope>". The middleware replaces that
# response with its own, so the body is the same whatever renders the route's errors.
# Never sent to a client.
DENIAL_MARKER = b"x-pyvault-denial"
REFRESH_HEADERS = (b"x-new-token", b"x-token-expires", b"x-refresh-reason")
_EXPOSE = b"access-control-expose-headers"


def insufficient_challenge(scope: str) -> str:
    """The WWW-Authenticate value of a 403 for a token without ``scope``."""
    return f'Bearer error="insufficient_scope", scope="{scope}"'


def header(scope: Scope, name: bytes) -> bytes | None:
    """The first request header called ``name`` (lower case), if any."""
    for key, value in scope.get("headers") or ():
        if key.lower() == name:
            return bytes(value)
    return None


def merge_expose(headers: Iterable[tuple[bytes, bytes]]) -> Headers:
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


def _body(plain: bytes, error: str, reason: str | None, message: str | None, *,
          explain: bool) -> bytes:
    if not explain:
        return plain
    return json.dumps({"error": error, "reason": reason, "message": message},
                      separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def unauthorized() -> Refusal:
    # RFC 6750 3.1: a request without credentials gets a challenge without an error.
    return 401, BODY_UNAUTHORIZED, [(b"www-authenticate", CHALLENGE_BARE)]


def invalid(reason: str | None, message: str | None, *, explain: bool) -> Refusal:
    """Any invalid token: the one 401, whatever the reason (unless ``explain``)."""
    return 401, _body(BODY_INVALID_TOKEN, "invalid_token", reason or "TOKEN_INVALID",
                      message, explain=explain), [(b"www-authenticate", CHALLENGE_INVALID)]


def insufficient(scope: str, reason: str | None, message: str | None, *,
                 explain: bool) -> Refusal:
    """A valid token without ``scope`` (the scopes asked for, space-separated)."""
    challenge = insufficient_challenge(scope).encode("latin-1")
    return 403, _body(BODY_INSUFFICIENT_SCOPE, "insufficient_scope", reason, message,
                      explain=explain), [(b"www-authenticate", challenge)]


def unavailable() -> Refusal:
    """The database unreachable or failing: never a detail."""
    return 503, BODY_UNAVAILABLE, [(b"retry-after", RETRY_AFTER_SECONDS)]


def refusal_headers(body: bytes, extra: Headers) -> Headers:
    return [(b"content-type", CONTENT_TYPE_JSON),
            (b"content-length", str(len(body)).encode("ascii")),
            (b"cache-control", b"no-store"), *extra]


async def send_refusal(scope: Scope, receive: Receive, send: Send, status: int,
                       body: bytes, extra: Headers) -> None:
    """Answer an HTTP request, or a WebSocket handshake, with a refusal."""
    headers = refusal_headers(body, extra)
    if scope["type"] == "http":
        if header(scope, b"origin") is not None:
            headers = merge_expose(headers)
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
