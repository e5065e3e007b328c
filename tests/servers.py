"""Servers for the tests: real uvicorn threads, the example processes, the test app.

Shared by the ASGI, example and PgBouncer test modules (test modules never import each
other: tests/test_test_suite_rules.py checks it).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Annotated

import pytest
import uvicorn
from fastapi import Depends, FastAPI
from psycopg_pool import AsyncConnectionPool
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Mount, Route

from pyvault_tokens.asgi import PyvaultAuth, require_scope, requires_scope
from tests.harness import CLI

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
NODE_DIR = ROOT / "clients" / "node"


def closed_port() -> int:
    """A local port with nothing listening on it: to aim a refused connection at, or for a
    server of the test to listen on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class UvicornThread:
    """A real uvicorn server in a thread, on a free port of 127.0.0.1."""

    def __init__(self, app) -> None:
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(128)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        config = uvicorn.Config(app, log_config=None, access_log=False, lifespan="on",
                                loop="asyncio", http="h11", ws="none", timeout_graceful_shutdown=2)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]},
                                       name="uvicorn-test", daemon=True)

    def __enter__(self) -> UvicornThread:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=15)
        self.sock.close()


# -- pools and requests ------------------------------------------------------------------

class CountingPool:
    """Counts connection checkouts: one per validation query."""

    def __init__(self, pool: AsyncConnectionPool) -> None:
        self.pool = pool
        self.count = 0

    def connection(self, *args, **kwargs):
        self.count += 1
        return self.pool.connection(*args, **kwargs)


def pool_lifespan(*pools: AsyncConnectionPool):
    """A Starlette lifespan that opens the pools at startup, in order, and closes them at
    shutdown. A pool is opened waiting for its min_size connections; one with min_size 0
    (aimed at a closed port, say) has none to wait for and is opened without waiting."""

    @contextlib.asynccontextmanager
    async def lifespan(app):
        for pool in pools:
            await pool.open(wait=pool.min_size > 0)
        try:
            yield
        finally:
            for pool in pools:
                await pool.close()

    return lifespan


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


# -- the test app ------------------------------------------------------------------------

async def whoami(request: Request) -> JSONResponse:
    auth: PyvaultAuth = request.state.pyvault
    return JSONResponse(auth.as_dict())


async def cached(request: Request) -> JSONResponse:
    return JSONResponse({"ok": True}, headers={"Cache-Control": "public, max-age=600"})


@requires_scope("api:write")
async def write(request: Request) -> JSONResponse:
    return JSONResponse({"wrote": True})


async def health(request: Request) -> PlainTextResponse:
    return PlainTextResponse("ok")


def inner_app() -> Starlette:
    fastapi_app = FastAPI()

    @fastapi_app.post("/items")
    async def create_item(auth: Annotated[PyvaultAuth, Depends(require_scope("api:write"))],
                          ) -> dict:
        return {"created": True, "user": auth.user_hk}

    return Starlette(routes=[
        Route("/whoami", whoami),
        Route("/cached", cached),
        Route("/write", write, methods=["POST"]),
        Route("/health", health),
        Mount("/fa", fastapi_app),
    ])


class Process:
    """A server process of ours: its output collected, its URL read from 'listening on'."""

    def __init__(self, args: list[str], env: dict[str, str], cwd: Path = ROOT) -> None:
        self.lines: list[str] = []
        self.url: str | None = None
        self._ready = threading.Event()
        self.proc = subprocess.Popen(args, cwd=cwd, env=env, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))
            m = re.search(r"listening on (http://\S+)", line)
            if m and self.url is None:
                self.url = m.group(1)
                self._ready.set()
        self._ready.set()

    def wait_ready(self, timeout: float = 60) -> str:
        self._ready.wait(timeout)
        if self.url is None:
            self.stop()
            raise RuntimeError("the server did not start:\n" + "\n".join(self.lines))
        return self.url

    def stop(self) -> int:
        """SIGTERM (SIGKILL after 15 s), then the rest of the output; the exit code."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._reader.join(timeout=5)
        return self.proc.returncode

    def events(self) -> list[dict]:
        """The JSON log lines so far (the refresher service's log)."""
        return [json.loads(line) for line in list(self.lines) if line.startswith("{")]

    def wait_for_output(self, text: str, timeout: float = 10) -> None:
        """Poll the collected output until a line holds ``text``, failing at the deadline."""
        deadline = time.monotonic() + timeout
        while not any(text in line for line in list(self.lines)):
            if time.monotonic() > deadline:
                raise AssertionError(f"no line with {text!r} in {timeout} s:\n{self.output}")
            time.sleep(0.02)

    @property
    def output(self) -> str:
        return "\n".join(self.lines)


def refresher(*args: str) -> Process:
    """`pyvault-tokens refresher ARGS` as a subprocess, its log lines collected."""
    return Process([*CLI, "refresher", *args], dict(os.environ))


def node_binary() -> str:
    node = shutil.which("node")
    if node is None:
        pytest.fail("`node` is not on PATH: the Node client and its example need Node.js 20+",
                    pytrace=False)
    modules = NODE_DIR / "node_modules"
    if not ((modules / "pg").is_dir() and (modules / "express").is_dir()):
        npm = shutil.which("npm")
        if npm is None:
            pytest.fail("`npm` is not on PATH (needed to install clients/node)", pytrace=False)
        subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=NODE_DIR, check=True,
                       capture_output=True, timeout=600)
    return node
