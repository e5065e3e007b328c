"""A database restart under a warm pool: once the database is back, no request fails.

This module starts its own small cluster (never the shared one), migrates it, serves
a Starlette app behind TokenRefreshMiddleware through uvicorn, warms the pool so that
every pooled connection has been used, restarts the cluster with its own stop and
start, and then sends requests one by one and in a burst. Every pooled connection is
dead after the restart; the middleware retries a validation once, on a fresh connection,
after the pool has checked its idle ones (``AsyncConnectionPool.check()``, run once for
all the requests that met a dead connection at the same time).

Not used: ``check=AsyncConnectionPool.check_connection``. psycopg_pool 3.3 backs off
between failed checks at checkout (1 s, 2 s, 4 s, ...), so a request meeting eight
dead connections in a row waits out its pool timeout and fails (measured: a
PoolTimeout after 10 s), and every checkout pays a round trip.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterator

import httpx
import psycopg
import pytest
from psycopg_pool import AsyncConnectionPool
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from pyvault_tokens import api
from pyvault_tokens.asgi import TokenRefreshMiddleware
from pyvault_tokens.embedded import EmbeddedPostgresql, start_cluster
from pyvault_tokens.migrate import migrate
from tests.servers import UvicornThread, bearer, pool_lifespan

POOL_SIZE = 8


@pytest.fixture(scope="module")
def own_cluster() -> Iterator[tuple[EmbeddedPostgresql, str]]:
    pg = start_cluster(extra_args="-c shared_buffers=16MB -c max_connections=40")
    try:
        with psycopg.connect(pg.url(database="postgres"), autocommit=True) as admin:
            admin.execute("CREATE DATABASE restart_test")
        url = pg.url(database="restart_test")
        migrate(url)
        yield pg, url
    finally:
        pg.stop()


def restart(pg: EmbeddedPostgresql) -> None:
    """Stop the cluster (a fast shutdown: every session is terminated) and start it again
    on the same port and data directory."""
    pg.terminate()
    assert not pg.is_alive()
    pg.start()


def issue(url: str, expires_in: str) -> str:
    with psycopg.connect(url, autocommit=True) as conn:
        keys = api.register_user(conn, "restart-tenant", "restart-user")
        return api.issue(conn, keys["user_hk"], keys["tenant_hk"],
                         expires_in=expires_in)["token"]


async def whoami(request: Request) -> JSONResponse:
    return JSONResponse({"user": request.user.user_hk})


@contextlib.contextmanager
def serve(url: str, **pool_options) -> Iterator[tuple[str, AsyncConnectionPool]]:
    pool = AsyncConnectionPool(url, min_size=POOL_SIZE, max_size=POOL_SIZE, timeout=10,
                               open=False, **pool_options)
    app = Starlette(routes=[Route("/me", whoami)], lifespan=pool_lifespan(pool))
    app.add_middleware(TokenRefreshMiddleware, pool=pool, registry=False)
    with UvicornThread(app) as server:
        yield server.url, pool


def burst(url: str, token: str, n: int) -> list[int]:
    async def go() -> list[int]:
        async with httpx.AsyncClient(base_url=url, timeout=20,
                                     limits=httpx.Limits(max_connections=n)) as client:
            answers = await asyncio.gather(*(client.get(
                "/me", headers=bearer(token)) for _ in range(n)))
        return [r.status_code for r in answers]

    return asyncio.run(go())


def test_no_request_fails_once_the_database_is_back(own_cluster, caplog) -> None:
    caplog.set_level(logging.WARNING, logger="pyvault_tokens.asgi")
    pg, url = own_cluster
    fresh = issue(url, "30 days")
    due = issue(url, "3 days")
    with serve(url) as (base, pool), httpx.Client(base_url=base, timeout=20) as http:
        # Warm: every pooled connection has served a validation.
        assert burst(base, fresh, 2 * POOL_SIZE) == [200] * (2 * POOL_SIZE)
        assert pool.get_stats()["pool_size"] == POOL_SIZE
        held = psycopg.connect(url, autocommit=True)

        restart(pg)
        with pytest.raises(psycopg.OperationalError):
            held.execute("SELECT 1")  # the restart really ended every session
        held.close()

        started = time.monotonic()
        statuses = [http.get("/me", headers=bearer(fresh)).status_code
                    for _ in range(POOL_SIZE)]
        assert statuses == [200] * POOL_SIZE, statuses
        assert time.monotonic() - started < 5, "no request waited out a pool timeout"
        rotated = http.get("/me", headers=bearer(due))
        assert rotated.status_code == 200 and rotated.headers["x-new-token"]

        restart(pg)  # again, now with requests arriving all at once
        assert burst(base, fresh, 2 * POOL_SIZE) == [200] * (2 * POOL_SIZE)

    retried = [m for m in caplog.messages if "database connection lost, validating again" in m]
    assert retried, "the dead connections were met, and the validations retried"
    assert len(retried) <= 2 * POOL_SIZE + 1
    assert not any("validation unavailable" in m for m in caplog.messages)
    # Each restart replaced every pooled connection: 8 at the start, 8 after each restart.
    assert pool.get_stats()["connections_num"] >= 3 * POOL_SIZE
