"""RefreshingTokenAuth against scripted servers (httpx.MockTransport): what it sends, what
it stores, and that it stores a new token once. The real server and database are in
test_asgi.py (end to end with uvicorn)."""

from __future__ import annotations

import asyncio
import logging
import secrets
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from pyvault_tokens.client import RefreshingTokenAuth, TokenNotFoundError
from pyvault_tokens.store import TokenStore

EXPIRES = "2031-01-02T03:04:05.678Z"


def new_token() -> str:
    return "ovt_prod_" + secrets.token_hex(32)


class RotatingServer:
    """Hands out one successor for the first token it sees (as the middleware does within
    the grace window: the same successor to every request with the old token)."""

    def __init__(self, first: str) -> None:
        self.first = first
        self.second = new_token()
        self.seen: list[str] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        token = request.headers["authorization"].removeprefix("Bearer ")
        self.seen.append(token)
        if token == self.first:
            return httpx.Response(200, headers={
                "X-New-Token": self.second, "X-Token-Expires": EXPIRES,
                "X-Refresh-Reason": "EXPIRING_SOON", "Cache-Control": "no-store"})
        if token == self.second:
            return httpx.Response(200)
        return httpx.Response(401, content=b'{"error":"invalid_token"}')


@pytest.fixture
def store(tmp_path: Path) -> TokenStore:
    return TokenStore(tmp_path / "tokens.json")


def test_it_sends_the_stored_token_and_stores_the_new_one(store: TokenStore) -> None:
    old = new_token()
    store.put("svc", old)
    server = RotatingServer(old)
    auth = RefreshingTokenAuth(store, "svc")
    with httpx.Client(transport=httpx.MockTransport(server), auth=auth) as client:
        assert client.get("https://api.test/me").status_code == 200
        entry = store.get("svc")
        assert entry.token == server.second
        assert entry.expires_at == datetime(2031, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)
        assert client.get("https://api.test/me").status_code == 200
        assert client.get("https://api.test/me").status_code == 200
    assert server.seen == [old, server.second, server.second]


def test_it_picks_up_a_token_stored_by_someone_else(store: TokenStore) -> None:
    first, other = new_token(), new_token()
    store.put("svc", first)
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers["authorization"])
        return httpx.Response(200)

    with httpx.Client(transport=httpx.MockTransport(handler),
                      auth=RefreshingTokenAuth(store, "svc")) as client:
        client.get("https://api.test/")
        store.put("svc", other)  # e.g. the refresher service rotated it
        client.get("https://api.test/")
    assert seen == [f"Bearer {first}", f"Bearer {other}"]


def test_a_new_token_never_overwrites_a_token_switched_to_meanwhile(store: TokenStore) -> None:
    old, switched = new_token(), new_token()
    store.put("svc", old)
    server = RotatingServer(old)

    def handler(request: httpx.Request) -> httpx.Response:
        response = server(request)
        store.put("svc", switched)  # the application switched while the request was out
        return response

    with httpx.Client(transport=httpx.MockTransport(handler),
                      auth=RefreshingTokenAuth(store, "svc")) as client:
        client.get("https://api.test/")
    assert store.get("svc").token == switched


@pytest.mark.parametrize("value", ["not-a-token", "ovt_prod_" + "AB" * 32, "SAME"])
def test_it_ignores_a_malformed_or_unchanged_new_token(store: TokenStore, value: str) -> None:
    old = new_token()
    store.put("svc", old)
    header = old if value == "SAME" else value

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers={"X-New-Token": header, "X-Token-Expires": EXPIRES,
                                            "X-Refresh-Reason": "EXPIRING_SOON"})

    with httpx.Client(transport=httpx.MockTransport(handler),
                      auth=RefreshingTokenAuth(store, "svc")) as client:
        client.get("https://api.test/")
    entry = store.get("svc")
    assert entry.token == old and entry.expires_at is None


def test_an_extended_token_gets_its_new_expiry(store: TokenStore) -> None:
    token = new_token()
    store.put("svc", token)

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers={"X-Token-Expires": EXPIRES,
                                            "X-Refresh-Reason": "EXPIRY_EXTENDED"})

    with httpx.Client(transport=httpx.MockTransport(handler),
                      auth=RefreshingTokenAuth(store, "svc")) as client:
        client.get("https://api.test/")
    entry = store.get("svc")
    assert entry.token == token
    assert entry.expires_at == datetime.fromisoformat(EXPIRES)


def test_concurrent_async_responses_store_the_new_token_once(store: TokenStore) -> None:
    old = new_token()
    store.put("svc", old)
    server = RotatingServer(old)
    swaps: list[bool] = []
    original = store.replace

    def counting_replace(*args, **kwargs) -> bool:
        done = original(*args, **kwargs)
        swaps.append(done)
        return done

    store.replace = counting_replace  # type: ignore[method-assign]
    gate = asyncio.Event()
    arrived = 0

    async def handler(request: httpx.Request) -> httpx.Response:
        nonlocal arrived
        arrived += 1
        if arrived == 12:
            gate.set()
        await asyncio.wait_for(gate.wait(), 5)  # every request is out before any returns
        return server(request)

    async def burst() -> list[httpx.Response]:
        async with httpx.AsyncClient(transport=httpx.MockTransport(handler),
                                     auth=RefreshingTokenAuth(store, "svc")) as client:
            return await asyncio.gather(*(client.get("https://api.test/") for _ in range(12)))

    responses = asyncio.run(burst())
    assert all(r.status_code == 200 for r in responses)
    assert server.seen == [old] * 12
    assert swaps.count(True) == 1
    assert store.get("svc").token == server.second


def test_a_plain_token_is_kept_in_memory_sync_and_async() -> None:
    old = new_token()
    server = RotatingServer(old)
    auth = RefreshingTokenAuth(token=old)
    with httpx.Client(transport=httpx.MockTransport(server), auth=auth) as client:
        client.get("https://api.test/")
        client.get("https://api.test/")
    assert server.seen == [old, server.second]
    assert auth.current_token() == server.second

    async def run() -> None:
        again = RotatingServer(old)
        a = RefreshingTokenAuth(token=old)
        async with httpx.AsyncClient(transport=httpx.MockTransport(again), auth=a) as client:
            await client.get("https://api.test/")
            await client.get("https://api.test/")
        assert again.seen == [old, again.second]

    asyncio.run(run())


def test_a_missing_entry_is_a_clear_error(store: TokenStore) -> None:
    transport = httpx.MockTransport(lambda r: httpx.Response(200))
    with (httpx.Client(transport=transport, auth=RefreshingTokenAuth(store, "nobody")) as client,
          pytest.raises(TokenNotFoundError, match="nobody")):
        client.get("https://api.test/")


def test_constructor_arguments_are_checked(store: TokenStore) -> None:
    with pytest.raises(TypeError):
        RefreshingTokenAuth()
    with pytest.raises(TypeError):
        RefreshingTokenAuth(store)
    with pytest.raises(TypeError):
        RefreshingTokenAuth(store, "svc", token=new_token())
    with pytest.raises(ValueError):
        RefreshingTokenAuth(token="")


def test_tokens_are_never_logged_or_shown(store: TokenStore, caplog) -> None:
    caplog.set_level(logging.DEBUG, logger="pyvault_tokens")
    old = new_token()
    store.put("svc", old)
    server = RotatingServer(old)
    auth = RefreshingTokenAuth(store, "svc")
    with httpx.Client(transport=httpx.MockTransport(server), auth=auth) as client:
        client.get("https://api.test/")
        client.get("https://api.test/")
    plain = RefreshingTokenAuth(token=old)
    shown = [rec.getMessage() for rec in caplog.records] + [repr(auth), repr(plain)]
    assert any("stored new token" in line for line in shown)
    for line in shown:
        for token in (old, server.second):
            assert token[13:] not in line, line  # nothing past the shown prefix
