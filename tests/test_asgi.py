"""The ASGI middleware end to end: a real uvicorn server on 127.0.0.1 running Starlette
(and a FastAPI sub-app) behind TokenRefreshMiddleware, a real PostgreSQL, and httpx
clients with RefreshingTokenAuth. The replica is simulated by a pool whose connections
are read-only; the unreachable database by a pool aimed at a closed port.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import psycopg
import pytest
from psycopg_pool import AsyncConnectionPool
from starlette.applications import Starlette
from starlette.routing import Mount

from pyvault_tokens.asgi import TokenRefreshMiddleware, requires_scope
from pyvault_tokens.client import RefreshingTokenAuth
from pyvault_tokens.store import TokenStore
from tests.servers import (
    CountingPool,
    UvicornThread,
    bearer,
    closed_port,
    inner_app,
    pool_lifespan,
)
from tests.tokens import make_token, successors

INVALID_BODY = b'{"error":"invalid_token"}'
INVALID_CHALLENGE = 'Bearer error="invalid_token"'
SCOPE_BODY = b'{"error":"insufficient_scope"}'
UNAVAILABLE_BODY = b'{"error":"temporarily_unavailable"}'
JSON_TYPE = "application/json; charset=utf-8"
RFC3339 = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
TOKEN_RE = re.compile(r"^ovt_prod_[0-9a-f]{64}$")


# Connection options that make a pool behave like a hot standby's.
READ_ONLY = {"options": "-c default_transaction_read_only=on"}


class Site:
    """The server and the pools behind it; each mount is one middleware configuration."""

    def __init__(self, db_url: str) -> None:
        self.primary_pool = AsyncConnectionPool(db_url, min_size=1, max_size=8, timeout=5,
                                                open=False, name="primary")
        self.replica_pool = AsyncConnectionPool(db_url, min_size=1, max_size=4, timeout=5,
                                                kwargs=READ_ONLY, open=False,
                                                name="replica")
        self.down_pool = AsyncConnectionPool(
            f"host=127.0.0.1 port={closed_port()} user=nobody dbname=nothing connect_timeout=1",
            min_size=0, max_size=1, timeout=1, open=False, name="down")
        self.primary = CountingPool(self.primary_pool)
        self.replica = CountingPool(self.replica_pool)
        inner = inner_app()
        mw = TokenRefreshMiddleware
        lifespan = pool_lifespan(self.primary_pool, self.replica_pool, self.down_pool)

        self.app = Starlette(routes=[
            Mount("/plain", mw(inner, self.primary, exempt_paths=("/health",))),
            Mount("/explain", mw(inner, self.primary_pool, explain_errors=True)),
            Mount("/admin", mw(inner, self.primary, required_scope="api:admin")),
            Mount("/replica", mw(inner, self.primary, replica_pool=self.replica)),
            Mount("/strict", mw(inner, self.primary, replica_pool=self.replica,
                                confirm_invalid_on_primary=False)),
            Mount("/down", mw(inner, self.down_pool)),
            Mount("/deadreplica", mw(inner, self.primary, replica_pool=self.down_pool)),
            Mount("/deadprimary", mw(inner, self.down_pool, replica_pool=self.replica)),
        ], lifespan=lifespan)

    def counts(self) -> tuple[int, int]:
        return self.primary.count, self.replica.count


@pytest.fixture(scope="module")
def site(db_url: str) -> Iterator[tuple[Site, str]]:
    s = Site(db_url)
    with UvicornThread(s.app) as server:
        yield s, server.url


@pytest.fixture
def url(site: tuple[Site, str]) -> str:
    return site[1]


@pytest.fixture
def http(url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=url, timeout=10) as client:
        yield client


@pytest.fixture
def reject_reuse_for_api(conn: psycopg.Connection) -> Iterator[None]:
    """The API token type refuses a reused token without revoking its family."""
    saved = conn.execute(
        "SELECT reuse_action FROM auth.token_refresh_policy WHERE token_type = 'API'"
    ).fetchone()[0]
    conn.execute("SELECT auth.set_refresh_policy('API', p_reuse_action => 'REJECT')")
    try:
        yield
    finally:
        conn.execute("SELECT auth.set_refresh_policy('API', p_reuse_action => %s)", (saved,))


# -- refresh, end to end -----------------------------------------------------------------

def test_client_follows_a_rotation_end_to_end(url, http, conn, tmp_path: Path,
                                              reject_reuse_for_api) -> None:
    old = make_token(conn, "3 days", token_type="API")
    store = TokenStore(tmp_path / "tokens.json")
    store.put("svc", old)
    sent: list[str] = []

    def record(request: httpx.Request) -> None:
        sent.append(request.headers["authorization"].removeprefix("Bearer "))

    auth = RefreshingTokenAuth(store, "svc")
    with httpx.Client(base_url=url, auth=auth, event_hooks={"request": [record]}) as client:
        first = client.get("/plain/whoami")
        assert first.status_code == 200
        new = first.headers["x-new-token"]
        assert TOKEN_RE.match(new) and new != old
        assert first.headers["x-refresh-reason"] == "EXPIRING_SOON"
        assert first.headers["cache-control"] == "no-store"
        expires = first.headers["x-token-expires"]
        assert RFC3339.match(expires)
        days = (datetime.fromisoformat(expires) - datetime.now(UTC)).total_seconds() / 86400
        assert 29.9 < days <= 30
        assert first.json()["expires_at"] == expires
        assert first.json()["was_refreshed"] is True

        stored = store.get("svc")
        assert stored.token == new, "the client stored the new token by itself"
        assert stored.expires_at == datetime.fromisoformat(expires)

        second = client.get("/plain/whoami")  # the successor's first use starts the grace
        assert second.status_code == 200
        assert "x-new-token" not in second.headers
        assert sent == [old, new], "later requests use the new token"

        conn.execute("SELECT tests.advance_clock('2 minutes')")
        refused = httpx.get(f"{url}/plain/whoami", headers=bearer(old))
        assert refused.status_code == 401
        assert refused.content == INVALID_BODY
        assert refused.headers["www-authenticate"] == INVALID_CHALLENGE

        third = client.get("/plain/whoami")
        assert third.status_code == 200, "the client keeps working with the new token"
        assert sent[-1] == new
    assert successors(conn, old) == 1


def test_concurrent_requests_during_a_rotation_all_succeed(url, conn, tmp_path: Path) -> None:
    old = make_token(conn, "3 days")

    class CountingStore(TokenStore):
        swaps = 0

        def replace(self, name, old_token, new_token, expires_at=None):
            done = super().replace(name, old_token, new_token, expires_at)
            CountingStore.swaps += done
            return done

    store = CountingStore(tmp_path / "tokens.json")
    store.put("svc", old)
    sent: list[str] = []

    async def record(request: httpx.Request) -> None:
        sent.append(request.headers["authorization"].removeprefix("Bearer "))

    async def burst() -> list[httpx.Response]:
        limits = httpx.Limits(max_connections=20)
        async with httpx.AsyncClient(base_url=url, auth=RefreshingTokenAuth(store, "svc"),
                                     limits=limits, timeout=20,
                                     event_hooks={"request": [record]}) as client:
            return await asyncio.gather(*(client.get("/plain/whoami") for _ in range(16)))

    responses = asyncio.run(burst())
    assert [r.status_code for r in responses] == [200] * 16
    new_tokens = {r.headers.get("x-new-token") for r in responses} - {None}
    assert len(new_tokens) == 1, "every response handed out the same successor"
    (new,) = new_tokens
    assert successors(conn, old) == 1, "exactly one successor"
    assert store.get("svc").token == new
    assert CountingStore.swaps == 1, "the new token was stored once"
    assert sent.count(old) >= 8, "most requests were in flight with the old token"
    reasons = {r.headers.get("x-refresh-reason") for r in responses if r.headers.get("x-new-token")}
    assert reasons <= {"EXPIRING_SOON", "ALREADY_REFRESHED"}


def test_reuse_after_the_grace_window_revokes_the_family(url, http, conn, tmp_path) -> None:
    old = make_token(conn, "3 days")  # PRODUCTION: the default policy revokes the family
    store = TokenStore(tmp_path / "tokens.json")
    store.put("svc", old)
    with httpx.Client(base_url=url, auth=RefreshingTokenAuth(store, "svc")) as client:
        assert client.get("/plain/whoami").status_code == 200
        assert client.get("/plain/whoami").status_code == 200
        conn.execute("SELECT tests.advance_clock('2 minutes')")
        reuse = http.get("/plain/whoami", headers=bearer(old))
        assert (reuse.status_code, reuse.content) == (401, INVALID_BODY)
        after = client.get("/plain/whoami")
        assert (after.status_code, after.content) == (401, INVALID_BODY)


def test_a_valid_token_passes_with_its_identity_and_no_refresh_headers(http, conn) -> None:
    token = make_token(conn, "30 days", user="bob")
    r = http.get("/plain/whoami", headers=bearer(token))
    assert r.status_code == 200
    body = r.json()
    keys = conn.execute(
        "SELECT encode(user_hk, 'hex'), encode(tenant_hk, 'hex') FROM tests.bridge(%s)", (token,)
    ).fetchone()
    assert (body["user_hk"], body["tenant_hk"]) == keys
    assert body["scope"] == ["api:read"]
    assert body["refresh_reason"] == "NO_REFRESH_NEEDED"
    for header in ("x-new-token", "x-token-expires", "x-refresh-reason"):
        assert header not in r.headers


def test_cache_control_no_store_wins_on_a_response_with_a_new_token(http, conn) -> None:
    plain = http.get("/plain/cached", headers=bearer(make_token(conn, "30 days")))
    assert plain.headers["cache-control"] == "public, max-age=600"
    r = http.get("/plain/cached", headers=bearer(make_token(conn, "3 days")))
    assert r.status_code == 200 and r.headers["x-new-token"]
    assert r.headers.get_list("cache-control") == ["no-store"]


def test_exempt_paths_pass_without_a_token_or_a_query(site, http) -> None:
    s, _ = site
    before = s.counts()
    r = http.get("/plain/health")
    assert (r.status_code, r.text) == (200, "ok")
    assert s.counts() == before
    assert http.get("/plain/whoami").status_code == 401, "only the listed path is exempt"


# -- refusals ----------------------------------------------------------------------------

MALFORMED = [
    "not-a-token",
    "ovt_prod_" + "ab" * 31,   # too short
    "ovt_prod_" + "ab" * 33,   # too long
    "ovt_test_" + "ab" * 32,   # wrong prefix
    "ovt_prod_" + "AB" * 32,   # not lower-case hex
    "ovt_prod_" + "g" * 64,    # not hex
    "ovt_prod_" + "é" * 64,    # not ASCII (sent as Latin-1 bytes)
    "ovt_prod_" + "0" * 63 + " 0",  # a space inside
]


def _send_raw(http: httpx.Client, path: str, token: str) -> httpx.Response:
    return http.get(path, headers={"Authorization": f"Bearer {token}".encode("latin-1")})


def test_every_invalid_token_gets_the_same_401(http, conn) -> None:
    expired = make_token(conn, "1 second")
    conn.execute("SELECT tests.advance_clock('1 hour')")
    revoked = make_token(conn, "30 days")
    assert conn.execute("SELECT auth.revoke_api_token(%s)", (revoked,)).fetchone()[0] is True
    cases = {"unknown": "ovt_prod_" + "ab" * 32, "expired": expired, "revoked": revoked,
             **{f"malformed{i}": t for i, t in enumerate(MALFORMED)}}
    answers = {name: _send_raw(http, "/plain/whoami", t) for name, t in cases.items()}
    for name, r in answers.items():
        assert r.status_code == 401, name
        assert r.content == INVALID_BODY, name
        assert r.headers["www-authenticate"] == INVALID_CHALLENGE, name
        assert r.headers["content-type"] == JSON_TYPE, name
        assert r.headers["cache-control"] == "no-store", name
        assert r.headers["content-length"] == str(len(INVALID_BODY)), name
        assert "x-new-token" not in r.headers, name


def test_malformed_tokens_cost_no_query(site, http) -> None:
    s, _ = site
    before = s.counts()
    for token in MALFORMED:
        assert _send_raw(http, "/plain/whoami", token).content == INVALID_BODY
    empty = http.get("/plain/whoami", headers={"Authorization": "Bearer"})
    assert (empty.status_code, empty.content) == (401, INVALID_BODY)
    assert s.counts() == before, "no query was sent for a malformed token"
    http.get("/plain/whoami", headers=bearer("ovt_prod_" + "0" * 64))
    assert s.counts() == (before[0] + 1, before[1]), "a well-formed token costs one query"


def test_a_request_without_credentials_gets_a_bare_challenge(http) -> None:
    for headers in ({}, {"Authorization": "Basic dXNlcjpwYXNz"}):
        r = http.get("/plain/whoami", headers=headers)
        assert r.status_code == 401
        assert r.headers["www-authenticate"] == "Bearer"
        assert r.content == b'{"error":"unauthorized"}'


def test_explain_errors_puts_the_reason_in_the_body(http, conn) -> None:
    revoked = make_token(conn, "30 days")
    conn.execute("SELECT auth.revoke_api_token(%s)", (revoked,))
    r = http.get("/explain/whoami", headers=bearer(revoked))
    assert r.status_code == 401
    assert r.headers["www-authenticate"] == INVALID_CHALLENGE
    assert r.content == (b'{"error":"invalid_token","reason":"TOKEN_INVALID",'
                         b'"message":"Token has been revoked"}')
    m = http.get("/explain/whoami", headers=bearer("nope"))
    assert m.json() == {"error": "invalid_token", "reason": "TOKEN_INVALID",
                        "message": "Token format is invalid"}


def test_missing_scope_is_403_from_the_database_and_from_route_checks(site, http, conn) -> None:
    s, _ = site
    reader = make_token(conn, "30 days", scope="{api:read}")
    r = http.get("/admin/whoami", headers=bearer(reader))
    assert r.status_code == 403
    assert r.content == SCOPE_BODY
    assert r.headers["www-authenticate"] == 'Bearer error="insufficient_scope", scope="api:admin"'
    assert r.headers["cache-control"] == "no-store"

    for path in ("/plain/write", "/plain/fa/items"):  # Starlette decorator, FastAPI dependency
        before = s.counts()
        r = http.post(path, headers=bearer(reader))
        assert r.status_code == 403, path
        assert r.content == SCOPE_BODY, path
        assert r.headers["www-authenticate"] == (
            'Bearer error="insufficient_scope", scope="api:write"'), path
        assert r.headers["content-type"] == JSON_TYPE, path
        assert "x-pyvault-insufficient-scope" not in r.headers, path
        assert s.counts()[0] == before[0] + 1, "the route check makes no second query"

    writer = make_token(conn, "30 days", scope="{api:read,api:write}")
    assert http.post("/plain/write", headers=bearer(writer)).json() == {"wrote": True}
    created = http.post("/plain/fa/items", headers=bearer(writer))
    assert created.status_code == 200 and created.json()["created"] is True


def test_a_route_403_still_hands_out_the_new_token(http, conn) -> None:
    reader = make_token(conn, "3 days", scope="{api:read}")
    r = http.post("/plain/fa/items", headers=bearer(reader))
    assert (r.status_code, r.content) == (403, SCOPE_BODY)
    assert TOKEN_RE.match(r.headers["x-new-token"])
    assert r.headers.get_list("cache-control") == ["no-store"]


def test_explained_route_403(http, conn) -> None:
    # /explain has no exempt paths and explains; its FastAPI route needs api:write.
    reader = make_token(conn, "30 days")
    r = http.post("/explain/fa/items", headers=bearer(reader))
    assert r.status_code == 403
    assert r.json() == {"error": "insufficient_scope", "reason": "INSUFFICIENT_SCOPE",
                        "message": "Token lacks the required scope"}


# -- the database unavailable -------------------------------------------------------------

def test_an_unreachable_database_is_a_503_with_retry_after(http, conn) -> None:
    token = make_token(conn, "30 days")
    started = time.monotonic()
    r = http.get("/down/whoami", headers=bearer(token))
    assert time.monotonic() - started < 5
    assert r.status_code == 503
    assert r.headers["retry-after"] == "5"
    assert r.content == UNAVAILABLE_BODY
    assert r.headers["cache-control"] == "no-store"
    assert "www-authenticate" not in r.headers


class FailingPool:
    """A pool whose every checkout fails with an error that quotes the token."""

    def __init__(self, message: str) -> None:
        self.message = message

    @contextlib.asynccontextmanager
    async def connection(self, *args, **kwargs):
        raise psycopg.errors.InternalError_(self.message)
        yield  # pragma: no cover


def _asgi_get(app, path: str, token: str) -> httpx.Response:
    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return await client.get(path, headers=bearer(token))

    return asyncio.run(go())


def test_a_failing_query_is_a_503_and_its_logged_error_is_redacted(conn, caplog) -> None:
    caplog.set_level(logging.INFO)
    token = make_token(conn, "30 days")
    app = TokenRefreshMiddleware(inner_app(), FailingPool(f"function failed for {token}"))
    r = _asgi_get(app, "/whoami", token)
    assert (r.status_code, r.content) == (503, UNAVAILABLE_BODY)
    assert r.headers["retry-after"] == "5"
    lines = [rec.getMessage() for rec in caplog.records if rec.name.startswith("pyvault")]
    assert any("XX000" in line and "ovt_prod_" in line for line in lines), lines
    assert not any(token[9:] in line for line in lines)


# -- replicas ----------------------------------------------------------------------------

def test_a_refresh_the_replica_defers_happens_on_the_primary(site, http, conn) -> None:
    s, _ = site
    token = make_token(conn, "3 days")
    before = s.counts()
    r = http.get("/replica/whoami", headers=bearer(token))
    assert r.status_code == 200
    assert (s.counts()[0] - before[0], s.counts()[1] - before[1]) == (1, 1)
    new = r.headers["x-new-token"]
    assert TOKEN_RE.match(new)
    assert r.headers["x-refresh-reason"] == "EXPIRING_SOON"
    assert r.headers["cache-control"] == "no-store"
    assert successors(conn, token) == 1, "the primary rotated the token"

    mid = s.counts()
    nxt = http.get("/replica/whoami", headers=bearer(new))
    assert nxt.status_code == 200 and "x-new-token" not in nxt.headers
    assert (s.counts()[0] - mid[0], s.counts()[1] - mid[1]) == (1, 1), \
        "the successor's first use is recorded on the primary (it starts the grace)"
    mid = s.counts()
    nxt = http.get("/replica/whoami", headers=bearer(new))
    assert nxt.status_code == 200 and "x-new-token" not in nxt.headers
    assert (s.counts()[0] - mid[0], s.counts()[1] - mid[1]) == (0, 1), "replica alone"

    again = http.get("/replica/whoami", headers=bearer(token))
    assert again.headers["x-new-token"] == new
    assert again.headers["x-refresh-reason"] == "ALREADY_REFRESHED"


def test_the_simulated_replica_is_read_only(db_url, conn) -> None:
    token = make_token(conn, "3 days")
    with psycopg.connect(db_url, **READ_ONLY) as ro:
        row = ro.execute("SELECT is_valid, refresh_reason, new_token"
                         " FROM auth.validate_and_refresh_api_token(%s, 'api:read')",
                         (token,)).fetchone()
    assert row == (True, "REFRESH_DEFERRED_READ_ONLY", None)
    assert successors(conn, token) == 0


def test_replica_routing_of_refusals_scopes_and_failures(site, http, conn) -> None:
    s, _ = site

    def delta(path: str, token: str) -> tuple[int, tuple[int, int]]:
        before = s.counts()
        r = http.get(path, headers=bearer(token))
        after = s.counts()
        return r.status_code, (after[0] - before[0], after[1] - before[1])

    unknown = "ovt_prod_" + "cd" * 32
    assert delta("/replica/whoami", unknown) == (401, (1, 1)), "refusal confirmed on the primary"
    assert delta("/strict/whoami", unknown) == (401, (0, 1)), "refused on the replica's word"
    fresh = make_token(conn, "30 days")
    assert delta("/replica/whoami", fresh) == (200, (0, 1)), "no refresh: the replica alone"
    r = http.get("/deadreplica/whoami", headers=bearer(fresh))
    assert r.status_code == 200, "a dead replica falls back to the primary"


def test_a_dead_primary_leaves_the_replicas_valid_answer_standing(site, http, conn,
                                                                  caplog) -> None:
    caplog.set_level(logging.WARNING, logger="pyvault_tokens.asgi")
    due = make_token(conn, "3 days")
    r = http.get("/deadprimary/whoami", headers=bearer(due))
    assert r.status_code == 200, "the refresh waits; the valid token is served"
    assert "x-new-token" not in r.headers
    assert successors(conn, due) == 0
    assert any("primary unavailable, the replica's answer stands" in m
               for m in caplog.messages)
    assert http.get("/deadprimary/whoami",
                    headers=bearer(make_token(conn, "30 days"))).status_code == 200


# -- logs ----------------------------------------------------------------------------------

def test_no_log_line_holds_a_token(url, http, conn, tmp_path, caplog) -> None:
    caplog.set_level(logging.INFO)
    caplog.set_level(logging.DEBUG, logger="pyvault_tokens")
    tokens = [make_token(conn, "3 days"), make_token(conn, "30 days", scope="{api:read}")]
    revoked = make_token(conn, "30 days")
    conn.execute("SELECT auth.revoke_api_token(%s)", (revoked,))
    tokens.append(revoked)
    store = TokenStore(tmp_path / "tokens.json")
    store.put("svc", tokens[0])
    with httpx.Client(base_url=url, auth=RefreshingTokenAuth(store, "svc")) as client:
        assert client.get("/plain/whoami").status_code == 200
        assert client.get("/plain/whoami").status_code == 200
    tokens.append(store.get("svc").token)
    http.get("/plain/whoami", headers=bearer(revoked))
    http.get("/plain/whoami", headers=bearer("ovt_prod_" + "e" * 63))
    http.post("/plain/fa/items", headers=bearer(tokens[1]))
    http.get("/replica/whoami", headers=bearer(make_token(conn, "3 days")))
    http.get("/down/whoami", headers=bearer(tokens[1]))

    lines = [rec.getMessage() for rec in caplog.records]
    ours = [line for line in lines if line.startswith("pyvault-tokens:")]
    assert any("token refreshed" in line and re.search("ovt_prod_[0-9a-f]{4}\u2026", line)
               for line in ours), ours
    assert any("token rejected" in line for line in ours)
    assert any("stored new token" in line for line in ours)
    assert any("validation unavailable" in line for line in ours)
    for line in lines:
        for token in tokens:
            assert token not in line and token[9:] not in line, line
        assert not re.search(r"[0-9a-f]{20}", line), f"a long hex run in a log line: {line}"


# -- WebSockets ----------------------------------------------------------------------------

async def _ws_session(app, path: str, token: str) -> list[dict]:
    """Drive one WebSocket handshake through an ASGI app; the messages it sent back."""
    scope = {"type": "websocket", "asgi": {"version": "3.0"}, "path": path,
             "raw_path": path.encode(), "root_path": "", "query_string": b"", "scheme": "ws",
             "headers": [(b"authorization", f"Bearer {token}".encode())],
             "server": ("test", 80), "client": ("127.0.0.1", 1), "subprotocols": [],
             "extensions": {"websocket.http.response": {}}, "state": {}}
    inbound: asyncio.Queue = asyncio.Queue()
    inbound.put_nowait({"type": "websocket.connect"})
    sent: list[dict] = []

    async def send(message) -> None:
        sent.append(dict(message))

    await asyncio.wait_for(app(scope, inbound.get, send), timeout=10)
    return sent


def test_websocket_handshakes_are_validated_and_refreshed(db_url, conn) -> None:
    from starlette.routing import WebSocketRoute
    from starlette.websockets import WebSocket

    async def echo_auth(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.send_json(websocket.state.pyvault.as_dict())
        await websocket.close()

    @requires_scope("api:write")
    async def write_socket(websocket: WebSocket) -> None:  # pragma: no cover - refused
        await websocket.accept()

    inner = Starlette(routes=[WebSocketRoute("/ws", echo_auth),
                              WebSocketRoute("/ws-write", write_socket)])
    unknown = "ovt_prod_" + "ab" * 32
    token = make_token(conn, "3 days")
    reader = make_token(conn, "30 days")

    async def go() -> tuple[list[dict], list[dict], list[dict]]:
        async with AsyncConnectionPool(db_url, min_size=1, max_size=2, timeout=5) as pool:
            app = TokenRefreshMiddleware(inner, pool)
            return (await _ws_session(app, "/ws", unknown), await _ws_session(app, "/ws", token),
                    await _ws_session(app, "/ws-write", reader))

    denied, accepted, scoped = asyncio.run(go())

    assert [m["type"] for m in denied] == ["websocket.http.response.start",
                                           "websocket.http.response.body"]
    assert denied[0]["status"] == 401 and denied[1]["body"] == INVALID_BODY
    assert (b"www-authenticate", INVALID_CHALLENGE.encode()) in denied[0]["headers"]

    assert accepted[0]["type"] == "websocket.accept"
    headers = {bytes(k).decode(): bytes(v).decode() for k, v in accepted[0]["headers"]}
    assert TOKEN_RE.match(headers["x-new-token"])
    assert headers["x-refresh-reason"] == "EXPIRING_SOON"
    assert '"was_refreshed":true' in accepted[1]["text"]

    assert scoped[0]["type"] == "websocket.http.response.start"
    assert scoped[0]["status"] == 403
    assert b"".join(m.get("body", b"") for m in scoped[1:]) == SCOPE_BODY
    assert not any(k == b"x-pyvault-insufficient-scope" for k, _ in scoped[0]["headers"])
