"""httpx authentication for clients of a pyvault-tokens API.

``RefreshingTokenAuth`` sends ``Authorization: Bearer <token>`` and, when a response
hands out a new token in ``X-New-Token``, stores it before the response is returned, so
the next request already uses it::

    store = TokenStore("~/.config/billing/tokens.json")
    with httpx.Client(base_url=url, auth=RefreshingTokenAuth(store, "billing")) as client:
        client.get("/api/me")

The token is read from the ``TokenStore`` entry for every request (so a token the
refresher service stored is picked up at once), and a new one is written with the
store's compare-and-swap, ``store.replace(name, sent, new, expires_at)``: of several
concurrent responses that carry the same new token, one stores it and the rest find it
stored; a token the application switched to meanwhile is never overwritten. An
``X-Token-Expires`` without a new token (the EXTEND policy) updates the stored expiry.
Works with ``httpx.Client`` and ``httpx.AsyncClient`` (store I/O runs in a worker thread
there). Tokens are never logged, only their prefix.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import AsyncGenerator, Generator
from datetime import datetime

import anyio.to_thread
import httpx

from pyvault_tokens.display import is_well_formed_token, token_prefix
from pyvault_tokens.store import TokenStore

__all__ = ["RefreshingTokenAuth", "TokenNotFoundError"]

_log = logging.getLogger("pyvault_tokens.client")


class TokenNotFoundError(LookupError):
    """The token store has no entry of that name."""


def _shown(token: str) -> str:
    """A token's prefix for a log line; nothing of a string that is not a token."""
    return token_prefix(token) if is_well_formed_token(token) else "(not a token)"


def _parse_expiry(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None


class RefreshingTokenAuth(httpx.Auth):
    """Bearer auth that follows the server's token rotation.

    ``RefreshingTokenAuth(store, name)`` keeps the token in a TokenStore entry;
    ``RefreshingTokenAuth(token="ovt_prod_…")`` keeps it in memory only (a process that
    restarts then starts again from that token, which the server refuses once it has
    been rotated and its grace window has passed: use a store for long-lived clients).
    """

    def __init__(self, store: TokenStore | None = None, name: str | None = None, *,
                 token: str | None = None) -> None:
        if token is not None:
            if store is not None or name is not None:
                raise TypeError("RefreshingTokenAuth: pass either store and name, or token")
            if not token:
                raise ValueError("RefreshingTokenAuth: token is empty")
        elif store is None or not name:
            raise TypeError("RefreshingTokenAuth: pass a TokenStore and an entry name, or token=")
        self.store = store
        self.name = name
        self._token = token
        self._lock = threading.Lock()

    def __repr__(self) -> str:  # never show a token
        if self.store is not None:
            return f"RefreshingTokenAuth(store={str(self.store.path)!r}, name={self.name!r})"
        return f"RefreshingTokenAuth(token={_shown(self._token or '')!r})"

    # -- the token -------------------------------------------------------------------
    def current_token(self) -> str:
        """The token the next request sends (blocking file I/O with a store)."""
        if self.store is None:
            with self._lock:
                return self._token  # type: ignore[return-value]
        entry = self.store.get(self.name)  # type: ignore[arg-type]
        if entry is None:
            raise TokenNotFoundError(
                f"token store {self.store.path} has no token named {self.name!r}")
        return entry.token

    def _replace(self, sent: str, new: str, expires_at: datetime | None) -> bool:
        if self.store is None:
            with self._lock:
                if self._token != sent:
                    return False
                self._token = new
                return True
        return self.store.replace(self.name, sent, new, expires_at)  # type: ignore[arg-type]

    def _take(self, headers: httpx.Headers, sent: str) -> None:
        """Store what the response says about the token that this request sent."""
        new = headers.get("x-new-token")
        expires_at = _parse_expiry(headers.get("x-token-expires"))
        if new:
            if new == sent or not is_well_formed_token(new):
                return
            stored = self._replace(sent, new, expires_at)
            _log.log(logging.INFO if stored else logging.DEBUG,
                     "pyvault-tokens: %s %s -> %s (%s)",
                     "stored new token" if stored else "new token already stored",
                     _shown(sent), _shown(new), headers.get("x-refresh-reason"))
        elif (expires_at is not None and headers.get("x-refresh-reason")
              and self._replace(sent, sent, expires_at)):
            # EXTEND: the same secret lives longer; only the expiry changes.
            _log.debug("pyvault-tokens: token %s now expires %s",
                       _shown(sent), expires_at.isoformat())

    # -- httpx flows -----------------------------------------------------------------
    def sync_auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response,
                                                                   None]:
        sent = self.current_token()
        request.headers["Authorization"] = f"Bearer {sent}"
        response = yield request
        self._take(response.headers, sent)

    async def async_auth_flow(self, request: httpx.Request) -> AsyncGenerator[httpx.Request,
                                                                              httpx.Response]:
        if self.store is None:
            sent = self.current_token()
        else:
            sent = await anyio.to_thread.run_sync(self.current_token)
        request.headers["Authorization"] = f"Bearer {sent}"
        response = yield request
        if self.store is None:
            self._take(response.headers, sent)
        else:
            await anyio.to_thread.run_sync(self._take, response.headers, sent)
