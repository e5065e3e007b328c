"""The examples run as documented, and the Python and Node middlewares answer alike.

Starts examples/fastapi_app.py (against this module's database) and
examples/express_gateway.js as real processes, and compares their refusals byte for
byte: the same status, body, Content-Type, Cache-Control, WWW-Authenticate and
Retry-After for every case.
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import threading
from collections.abc import Iterator

import httpx
import psycopg
import pytest
from psycopg_pool import AsyncConnectionPool
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route

from pyvault_tokens.asgi import TokenRefreshMiddleware
from pyvault_tokens.client import RefreshingTokenAuth
from pyvault_tokens.store import TokenStore
from tests.servers import EXAMPLES, Process, closed_port, node_binary
from tests.tokens import make_token

COMPARED = ("content-type", "cache-control", "www-authenticate", "retry-after",
            "content-length")


@pytest.fixture(scope="module")
def python_app(db_url: str, tmp_path_factory) -> Iterator[tuple[str, TokenStore, Process]]:
    store = TokenStore(tmp_path_factory.mktemp("example") / "tokens.json")
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("DATABASE_URL", None)
    proc = Process([sys.executable, str(EXAMPLES / "fastapi_app.py"), "--database", db_url,
                    "--port", "0", "--store", str(store.path)], env)
    try:
        yield proc.wait_ready(), store, proc
    finally:
        proc.stop()


@pytest.fixture(scope="module")
def node_gateway(db_url: str) -> Iterator[tuple[str, Process]]:
    node = node_binary()
    env = {**os.environ, "DATABASE_URL": db_url, "PORT": "0"}
    proc = Process([node, str(EXAMPLES / "express_gateway.js")], env)
    try:
        yield proc.wait_ready(), proc
    finally:
        proc.stop()


def test_the_fastapi_example_serves_and_its_token_rotates(python_app) -> None:
    url, store, proc = python_app
    first = store.get("demo").token
    assert any("stored as 'demo'" in line for line in proc.lines)
    with httpx.Client(base_url=url, auth=RefreshingTokenAuth(store, "demo"), timeout=10) as c:
        me = c.get("/api/me")
        assert me.status_code == 200
        assert me.headers["x-refresh-reason"] == "EXPIRING_SOON"
        assert me.json()["scope"] == ["api:read", "api:write"]
        created = c.post("/api/items", json={"name": "widget"})
        assert created.status_code == 201 and created.json()["name"] == "widget"
    second = store.get("demo").token
    assert second != first
    assert httpx.get(f"{url}/health").json() == {"ok": True}
    assert httpx.get(f"{url}/api/me").status_code == 401
    # uvicorn logs a request before it sends the answer: once that last line is read, all
    # the example printed for the requests above has been read too.
    proc.wait_for_output('"GET /api/me HTTP/1.1" 401')
    for token in (first, second):
        assert token[13:] not in proc.output, "the example printed or logged a token"


def test_the_fastapi_example_declares_bearer_security_and_exports_metrics(python_app,
                                                                          conn) -> None:
    url, _, _ = python_app
    spec = httpx.get(f"{url}/openapi.json").json()
    assert spec["components"]["securitySchemes"]["PyvaultBearer"]["scheme"] == "bearer"
    assert spec["paths"]["/api/items"]["post"]["security"] == [{"PyvaultBearer": ["api:write"]}]
    assert spec["paths"]["/api/me"]["get"]["security"] == [{"PyvaultBearer": []}]
    token = make_token(conn, "30 days")
    assert httpx.get(f"{url}/api/me", headers={"Authorization": f"Bearer {token}"}).is_success
    text = httpx.get(f"{url}/metrics/").text
    ok = re.search(r'^pyvault_requests_total\{outcome="ok"\} (\S+)$', text, re.M)
    assert ok and float(ok.group(1)) >= 1, text[:2000]
    assert "pyvault_validation_seconds_bucket" in text


def test_call_api_example_follows_the_rotation(python_app, conn, tmp_path) -> None:
    url, _, _ = python_app
    store = TokenStore(tmp_path / "tokens.json")
    store.put("demo", make_token(conn, "3 days", scope="{api:read,api:write}"))
    proc = subprocess.run([sys.executable, str(EXAMPLES / "call_api.py"), "--url", url,
                           "--store", str(store.path)], capture_output=True, text=True,
                          timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    assert "rotated (EXPIRING_SOON)" in proc.stdout
    assert "POST /api/items: 201" in proc.stdout
    assert store.get("demo").token[13:] not in proc.stdout


def _answer(response: httpx.Response) -> tuple:
    return (response.status_code, response.content,
            tuple((name, response.headers.get(name)) for name in COMPARED))


def test_the_node_and_python_middlewares_refuse_byte_for_byte(python_app, node_gateway,
                                                              conn) -> None:
    py_url = python_app[0]
    node_url = node_gateway[0]
    reader = make_token(conn, "30 days", scope="{api:read}")
    revoked = make_token(conn, "30 days")
    conn.execute("SELECT auth.revoke_api_token(%s)", (revoked,))
    expired = make_token(conn, "1 second")
    conn.execute("SELECT tests.advance_clock('1 hour')")
    cases = {
        "no credentials": ("GET", "/api/me", {}),
        "basic auth": ("GET", "/api/me", {"Authorization": "Basic dXNlcjpwYXNz"}),
        "empty bearer": ("GET", "/api/me", {"Authorization": "Bearer"}),
        "malformed": ("GET", "/api/me", {"Authorization": "Bearer nope"}),
        "upper-case hex": ("GET", "/api/me", {"Authorization": "Bearer ovt_prod_" + "AB" * 32}),
        "unknown": ("GET", "/api/me", {"Authorization": "Bearer ovt_prod_" + "ab" * 32}),
        "revoked": ("GET", "/api/me", {"Authorization": f"Bearer {revoked}"}),
        "expired": ("GET", "/api/me", {"Authorization": f"Bearer {expired}"}),
        "missing scope": ("POST", "/api/items", {"Authorization": f"Bearer {reader}"}),
    }
    with httpx.Client(timeout=10) as http:
        for name, (method, path, headers) in cases.items():
            py = http.request(method, py_url + path, headers=headers, json={"name": "x"})
            node = http.request(method, node_url + path, headers=headers, json={"name": "x"})
            assert py.status_code in (401, 403), name
            assert _answer(py) == _answer(node), name


def test_both_middlewares_hand_out_a_refresh_alike(python_app, node_gateway, conn) -> None:
    with httpx.Client(timeout=10) as http:
        answers = []
        for url in (python_app[0], node_gateway[0]):
            token = make_token(conn, "3 days")
            r = http.get(url + "/api/me", headers={"Authorization": f"Bearer {token}"})
            assert r.status_code == 200
            answers.append(r)
    py, node = answers
    for r in answers:
        assert re.fullmatch(r"ovt_prod_[0-9a-f]{64}", r.headers["x-new-token"])
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", r.headers["x-token-expires"])
        assert r.headers.get_list("cache-control") == ["no-store"]
    assert py.headers["x-refresh-reason"] == node.headers["x-refresh-reason"] == "EXPIRING_SOON"
    assert set(py.json()) >= {"user_hk", "tenant_hk", "scope", "expires_at"}
    assert py.json()["user_hk"] == node.json()["userHk"]


def test_both_middlewares_answer_an_unreachable_database_alike(conn) -> None:
    node = node_binary()
    dead = f"postgresql://nobody@127.0.0.1:{closed_port()}/nothing"
    token = make_token(conn, "30 days")
    headers = {"Authorization": f"Bearer {token}"}
    gateway = Process([node, str(EXAMPLES / "express_gateway.js")],
                      {**os.environ, "DATABASE_URL": dead, "PORT": "0"})
    try:
        node_answer = httpx.get(gateway.wait_ready() + "/api/me", headers=headers, timeout=10)
    finally:
        gateway.stop()

    async def python_answer() -> httpx.Response:
        async def me(request):  # pragma: no cover - never reached
            return JSONResponse({})

        async with AsyncConnectionPool(dead, min_size=0, max_size=1, timeout=1,
                                       open=False) as pool:
            app = TokenRefreshMiddleware(Starlette(routes=[Route("/api/me", me)]), pool)
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
                return await client.get("/api/me", headers=headers)

    py_answer = asyncio.run(python_answer())
    assert py_answer.status_code == 503
    assert _answer(py_answer) == _answer(node_answer)
    assert py_answer.headers["retry-after"] == "5"


def test_the_gateway_forwards_to_an_upstream_without_the_token(db_url, conn) -> None:
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    seen: list[dict[str, str]] = []

    class Upstream(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            seen.append({k.lower(): v for k, v in self.headers.items()})
            body = b'{"from":"upstream"}'
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Cache-Control", "public, max-age=60")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args) -> None:
            pass

    upstream = ThreadingHTTPServer(("127.0.0.1", 0), Upstream)
    threading.Thread(target=upstream.serve_forever, daemon=True).start()
    env = {**os.environ, "DATABASE_URL": db_url, "PORT": "0",
           "UPSTREAM_URL": f"http://127.0.0.1:{upstream.server_address[1]}"}
    gateway = Process([node_binary(), str(EXAMPLES / "express_gateway.js")], env)
    try:
        url = gateway.wait_ready()
        token = make_token(conn, "3 days")
        r = httpx.get(url + "/api/orders?x=1", headers={"Authorization": f"Bearer {token}"})
    finally:
        gateway.stop()
        upstream.shutdown()
    assert r.status_code == 200 and r.json() == {"from": "upstream"}
    assert re.fullmatch(r"ovt_prod_[0-9a-f]{64}", r.headers["x-new-token"])
    assert r.headers.get_list("cache-control") == ["no-store"], "never cache a new token"
    (forwarded,) = seen
    assert "authorization" not in forwarded, "the token is not forwarded"
    assert re.fullmatch(r"[0-9a-f]{64}", forwarded["x-pyvault-user"])
    assert forwarded["x-pyvault-scope"] == "api:read"
    with psycopg.connect(db_url) as c:
        assert c.execute("SELECT (tests.bridge(%s)).successor_hk IS NOT NULL",
                         (token,)).fetchone()[0]
