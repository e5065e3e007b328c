"""A small FastAPI service behind pyvault-tokens' TokenRefreshMiddleware.

    python examples/fastapi_app.py                       # on an embedded throwaway cluster
    python examples/fastapi_app.py --database postgresql://admin@db/app   # or DATABASE_URL

It migrates the database (safe to repeat), issues a demo token with the scopes
api:read and api:write that expires in 3 days (inside the 7-day refresh threshold, so
the first request rotates it), writes that token into a TokenStore file (mode 0600) and
prints the file's path, never the token. Then it serves on 127.0.0.1:8000 until Ctrl-C:

    GET  /health       no token needed (an exempt path)
    GET  /api/me       any valid token (the middleware requires api:read)
    POST /api/items    the token must also hold api:write
    GET  /docs         Swagger UI; its Authorize button takes the token (PyvaultBearer)
    GET  /metrics      pyvault_requests_total and pyvault_validation_seconds (Prometheus)

With --cors-origin https://app.example a browser app on that origin may call the API and
read X-New-Token, X-Token-Expires and X-Refresh-Reason.

`python examples/call_api.py` calls it with the stored token and follows the rotation.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import os
import signal
import socket
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Annotated

import psycopg
import uvicorn
from fastapi import FastAPI
from prometheus_client import make_asgi_app
from psycopg_pool import AsyncConnectionPool
from pydantic import BaseModel
from starlette.middleware.cors import CORSMiddleware

from pyvault_tokens import api
from pyvault_tokens.asgi import EXPOSE_HEADERS, PyvaultAuth, TokenRefreshMiddleware
from pyvault_tokens.display import token_prefix
from pyvault_tokens.fastapi import Authenticated, require
from pyvault_tokens.migrate import migrate
from pyvault_tokens.store import TokenStore

DEFAULT_STORE = Path(tempfile.gettempdir()) / "pyvault-demo" / "tokens.json"
TOKEN_NAME = "demo"


class NewItem(BaseModel):
    name: str


def _pool(url: str, name: str) -> AsyncConnectionPool:
    # A short checkout timeout and statement timeout: an unreachable or stuck database
    # answers 503 within about two seconds instead of holding requests. No check= here:
    # the middleware itself retries a validation whose pooled connection died.
    return AsyncConnectionPool(url, min_size=1, max_size=10, timeout=2, open=False, name=name,
                               kwargs={"options": "-c statement_timeout=2000"})


def create_app(database_url: str, replica_url: str | None = None,
               cors_origins: list[str] | None = None) -> FastAPI:
    pool = _pool(database_url, "primary")
    replica = _pool(replica_url, "replica") if replica_url else None

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        for p in (pool, replica):
            if p is not None:
                await p.open()  # does not wait: the app starts even if the database is down
        try:
            yield
        finally:
            for p in (pool, replica):
                if p is not None:
                    await p.close()

    app = FastAPI(title="pyvault-tokens example", lifespan=lifespan)
    app.add_middleware(TokenRefreshMiddleware, pool=pool, replica_pool=replica,
                       exempt_paths=("/health", "/docs", "/openapi.json", "/metrics",
                                     "/metrics/"))
    if cors_origins:
        # Added last, so it is outermost: it also decorates the middleware's 401s, and a
        # preflight never reaches the middleware. Its expose list names the token headers.
        app.add_middleware(CORSMiddleware, allow_origins=cors_origins,
                           allow_methods=["GET", "POST"],
                           allow_headers=["authorization", "content-type"],
                           expose_headers=list(EXPOSE_HEADERS))
    app.mount("/metrics", make_asgi_app())
    ids = itertools.count(1)

    @app.get("/health")
    async def health() -> dict:
        return {"ok": True}

    @app.get("/api/me")
    async def me(auth: Authenticated) -> dict:
        # The same identity as request.user (user_hk, tenant_hk) and request.auth.scopes.
        return auth.as_dict()

    @app.post("/api/items", status_code=201)
    async def create_item(item: NewItem,
                          auth: Annotated[PyvaultAuth, require("api:write")]) -> dict:
        return {"id": next(ids), "name": item.name, "owner": auth.user_hk}

    return app


def issue_demo_token(database_url: str, store: TokenStore, name: str = TOKEN_NAME) -> str:
    """Issue a token that expires in 3 days into the store; returns its prefix only."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        keys = api.register_user(conn, "demo-tenant", "demo-user")
        issued = api.issue(conn, keys["user_hk"], keys["tenant_hk"],
                           scope=["api:read", "api:write"], expires_in="3 days")
    store.put(name, issued["token"], issued["expires_at"])
    return token_prefix(issued["token"])


@contextlib.contextmanager
def _database(url: str | None) -> Iterator[str]:
    if url:
        yield url
        return
    from pyvault_tokens.embedded import start_cluster

    print("starting an embedded throwaway PostgreSQL cluster…", flush=True)
    cluster = start_cluster()
    try:
        yield cluster.url(database="postgres")
    finally:
        cluster.stop()
        print("embedded cluster stopped and removed", flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database", default=os.environ.get("DATABASE_URL"),
                        help="PostgreSQL URL (default: $DATABASE_URL, else an embedded cluster)")
    parser.add_argument("--replica", default=os.environ.get("REPLICA_URL"),
                        help="a read replica to validate on (default: $REPLICA_URL)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000, help="0 picks a free port")
    parser.add_argument("--cors-origin", action="append", default=[],
                        help="an origin whose browser apps may call the API (repeatable)")
    parser.add_argument("--store", type=Path, default=DEFAULT_STORE,
                        help=f"token store file for the demo token (default: {DEFAULT_STORE})")
    args = parser.parse_args(argv)

    with _database(args.database) as url:
        migrate(url)
        store = TokenStore(args.store)
        prefix = issue_demo_token(url, store)

        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((args.host, args.port))
        sock.listen(128)
        base = f"http://{args.host}:{sock.getsockname()[1]}"
        print(f"demo token {prefix} (api:read, api:write; expires in 3 days) stored as "
              f"{TOKEN_NAME!r} in {store.path}", flush=True)
        print(f"try:  python examples/call_api.py --url {base} --store {store.path}", flush=True)
        print(f"listening on {base}", flush=True)
        config = uvicorn.Config(create_app(url, args.replica, args.cors_origin), log_level="info")
        uvicorn.Server(config).run(sockets=[sock])


def _exit_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(0)


if __name__ == "__main__":
    # uvicorn shuts down gracefully on SIGINT/SIGTERM and then raises the signal again;
    # these handlers turn that into an ordinary exit, so the embedded cluster is stopped.
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    with contextlib.suppress(KeyboardInterrupt):
        main()
