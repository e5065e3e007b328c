"""Behind PgBouncer 1.18 in transaction pooling mode: the ASGI middleware, the Node
middleware, the refresher service and the CLI.

The tests start their own PgBouncer (the Debian package, installed by
tools/install-debian-packages) on a free port of 127.0.0.1, as the postgres user when run
as root, in front of the run's cluster, with auth_type trust and pool_mode transaction.
Its server pool is kept small (default_pool_size 3), so that clients really share
server connections, as on a busy server.

What transaction pooling changes, and what each part does about it:

- Server-side prepared statements do not survive a transaction: the next one may run on
  another server connection (PgBouncer supports protocol-level prepared statements from
  1.21 only). psycopg prepares a query once it has run prepare_threshold (5) times on a
  connection, so pools need ``kwargs={"prepare_threshold": None}``; the CLI and the
  refresher set it on their own connections. Node's ``pg`` uses the unnamed statement
  unless a query is given a ``name``, which the Node middleware never does.
- LISTEN needs a session: the refresher listens on --listen-database (PostgreSQL
  itself), or notices that notifications do not arrive and sweeps on its interval.
- The ``options`` startup parameter (``-c statement_timeout=...``) is refused unless
  listed in ignore_startup_parameters; set such settings on the role instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
import pytest

from pyvault_tokens import api
from pyvault_tokens.embedded import SERVER_USER, _running_as_root, _tmp_root
from pyvault_tokens.store import TokenStore
from tests.polling import wait_for
from tests.servers import (
    CLI,
    EXAMPLES,
    Process,
    UvicornThread,
    bearer,
    closed_port,
    inner_app,
    node_binary,
    pool_lifespan,
    refresher,
)
from tests.tokens import make_token, successors

PGBOUNCER = "/usr/sbin/pgbouncer"


class PgBouncer:
    """A PgBouncer of this test run, in transaction pooling mode, in front of ``port``."""

    def __init__(self, server_port: int, *, pool_size: int = 3,
                 ignore_startup_parameters: str = "extra_float_digits") -> None:
        if shutil.which(PGBOUNCER) is None and not Path(PGBOUNCER).exists():
            pytest.fail("pgbouncer is not installed: run tools/install-debian-packages "
                        "(the Debian package pgbouncer, 1.18)", pytrace=False)
        self.port = closed_port()
        self.dir = Path(tempfile.mkdtemp(prefix="pyvault-pgbouncer-", dir=_tmp_root()))
        (self.dir / "userlist.txt").write_text(f'"{SERVER_USER}" ""\n"mallory" ""\n')
        self.ini = self.dir / "pgbouncer.ini"
        self.ini.write_text(f"""[databases]
* = host=127.0.0.1 port={server_port}

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {self.port}
unix_socket_dir =
auth_type = trust
auth_file = {self.dir / "userlist.txt"}
pool_mode = transaction
default_pool_size = {pool_size}
max_client_conn = 200
ignore_startup_parameters = {ignore_startup_parameters}
logfile = {self.dir / "pgbouncer.log"}
pidfile = {self.dir / "pgbouncer.pid"}
admin_users = {SERVER_USER}
""")
        command = [PGBOUNCER, str(self.ini)]
        if _running_as_root():
            user = pwd.getpwnam(SERVER_USER)
            for path in (self.dir, *self.dir.iterdir()):
                os.chown(path, user.pw_uid, user.pw_gid)
            command = ["setpriv", f"--reuid={SERVER_USER}", f"--regid={SERVER_USER}",
                       "--init-groups", "--", *command]
        self.proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 20
        while True:
            with contextlib.suppress(OSError), socket.create_connection(
                    ("127.0.0.1", self.port), timeout=1):
                break
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"pgbouncer did not start:\n{self.log()}")
            time.sleep(0.05)

    def url(self, database: str, user: str = SERVER_USER) -> str:
        return f"postgresql://{user}@127.0.0.1:{self.port}/{database}"

    def log(self) -> str:
        path = self.dir / "pgbouncer.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()  # SIGTERM: PgBouncer's immediate shutdown
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="module")
def bouncer(cluster) -> Iterator[PgBouncer]:
    b = PgBouncer(cluster.port)
    try:
        yield b
    finally:
        b.stop()


@pytest.fixture(scope="module")
def dbname(db_url: str) -> str:
    return psycopg.conninfo.conninfo_to_dict(db_url)["dbname"]


@pytest.fixture(scope="module")
def pooled_url(bouncer: PgBouncer, dbname: str) -> str:
    return bouncer.url(dbname)


def test_connections_go_through_pgbouncer_in_transaction_mode(bouncer, pooled_url):
    with psycopg.connect(bouncer.url("pgbouncer"), autocommit=True,
                         prepare_threshold=None) as admin:
        rows = admin.cursor().execute("SHOW CONFIG").fetchall()
        version = admin.cursor().execute("SHOW VERSION").fetchone()[0]
    config = {r[0]: r[1] for r in rows}
    assert config["pool_mode"] == "transaction"
    assert config["default_pool_size"] == "3"
    assert version.startswith("PgBouncer 1.18"), version
    with psycopg.connect(pooled_url, autocommit=True, prepare_threshold=None) as conn:
        version_num = conn.execute("SELECT current_setting('server_version_num')::int")
        assert version_num.fetchone()[0] >= 150000


# -- what breaks, and the settings that fix it ---------------------------------------------

def _prepared_then_moved(url: str, **kwargs) -> None:
    """Run one query twice on a connection while another client holds the server connection
    the first run used: the second run lands on another server connection."""
    with psycopg.connect(url, autocommit=True, **kwargs) as conn, \
            psycopg.connect(url, autocommit=True, prepare_threshold=None) as other:
        query = "SELECT %s::int + 1"
        assert conn.execute(query, (1,)).fetchone()[0] == 2
        first = conn.execute("SELECT pg_backend_pid()").fetchone()[0]
        with other.transaction():  # PgBouncer hands it the most recently used server
            held = other.execute("SELECT pg_backend_pid()").fetchone()[0]
            assert held == first, "the other client holds the first server connection"
            assert conn.execute(query, (2,)).fetchone()[0] == 3


def test_psycopg_prepared_statements_break_and_prepare_threshold_none_fixes_it(pooled_url):
    """Why the pools need prepare_threshold=None behind PgBouncer before 1.21."""
    with pytest.raises(psycopg.errors.InvalidSqlStatementName, match="does not exist"):
        _prepared_then_moved(pooled_url, prepare_threshold=0)  # prepare on first use
    _prepared_then_moved(pooled_url, prepare_threshold=None)


def test_the_options_startup_parameter_is_refused(pooled_url):
    """``options=-c statement_timeout=...`` (as examples/fastapi_app.py passes it) is
    refused by PgBouncer 1.18 unless ignore_startup_parameters lists it."""
    with pytest.raises(psycopg.OperationalError, match="unsupported startup parameter"):
        psycopg.connect(pooled_url, options="-c statement_timeout=2000").close()


# -- the Python ASGI middleware ------------------------------------------------------------

def test_the_asgi_middleware_validates_and_rotates_through_pgbouncer(pooled_url, conn):
    """Concurrent requests through a real uvicorn, a psycopg pool of 6 connections with
    prepare_threshold=None, and PgBouncer's 3 server connections: each connection runs the
    validation far more than 5 times, so prepared statements would have broken it."""
    from psycopg_pool import AsyncConnectionPool
    from starlette.applications import Starlette
    from starlette.routing import Mount

    from pyvault_tokens.asgi import TokenRefreshMiddleware

    pool = AsyncConnectionPool(pooled_url, min_size=2, max_size=6, timeout=10, open=False,
                               kwargs={"prepare_threshold": None}, name="pgbouncer")
    app = Starlette(routes=[Mount("/p", TokenRefreshMiddleware(inner_app(), pool))],
                    lifespan=pool_lifespan(pool))
    tokens = [make_token(conn, "3 days", token_type="API", tenant="bouncer") for _ in range(4)]

    async def scenario(url: str) -> None:
        async with httpx.AsyncClient(base_url=url, timeout=20) as http:
            async def get(token: str) -> httpx.Response:
                return await http.get("/p/whoami", headers=bearer(token))

            first = await asyncio.gather(*(get(t) for t in tokens for _ in range(5)))
            assert [r.status_code for r in first] == [200] * 20, [r.text for r in first]
            for i in range(len(tokens)):
                answers = first[i * 5:(i + 1) * 5]
                new = {r.headers["x-new-token"] for r in answers}
                assert len(new) == 1, "every concurrent caller got the same successor"
                assert {r.headers["x-refresh-reason"] for r in answers} <= {
                    "EXPIRING_SOON", "ALREADY_REFRESHED"}
                successor = new.pop()
                again = await asyncio.gather(*(get(successor) for _ in range(10)))
                assert [r.status_code for r in again] == [200] * 10
                assert all("x-new-token" not in r.headers for r in again)
            refused = await get("ovt_prod_" + "0" * 64)
            assert refused.status_code == 401

    with UvicornThread(app) as server:
        asyncio.run(scenario(server.url))
    for token in tokens:
        assert successors(conn, token) == 1


# -- the Node middleware -------------------------------------------------------------------

def test_the_node_middleware_validates_and_rotates_through_pgbouncer(pooled_url, conn):
    """examples/express_gateway.js (a pg.Pool of 10 over PgBouncer's 3 server connections).
    pg sends every query as the unnamed statement (Parse/Bind without a name), which
    transaction pooling carries: no setting is needed on the Node side."""

    gateway = Process([node_binary(), str(EXAMPLES / "express_gateway.js")],
                      {**os.environ, "DATABASE_URL": pooled_url, "PORT": "0"})
    tokens = [make_token(conn, "3 days", token_type="API", tenant="node") for _ in range(3)]
    try:
        url = gateway.wait_ready()

        async def scenario() -> None:
            async with httpx.AsyncClient(base_url=url, timeout=20) as http:
                async def get(token: str) -> httpx.Response:
                    return await http.get("/api/me", headers=bearer(token))

                first = await asyncio.gather(*(get(t) for t in tokens for _ in range(6)))
                assert [r.status_code for r in first] == [200] * 18, [r.text for r in first]
                for i in range(len(tokens)):
                    new = {r.headers["x-new-token"] for r in first[i * 6:(i + 1) * 6]}
                    assert len(new) == 1
                    successor = new.pop()
                    again = await asyncio.gather(*(get(successor) for _ in range(12)))
                    assert [r.status_code for r in again] == [200] * 12
                    assert all("x-new-token" not in r.headers for r in again)
                refused = await get("ovt_prod_" + "0" * 64)
                assert (refused.status_code, refused.content) == (401, b'{"error":"invalid_token"}')

        asyncio.run(scenario())
    finally:
        gateway.stop()
    assert "prepared statement" not in gateway.output, gateway.output
    for token in tokens:
        assert successors(conn, token) == 1


# -- the refresher service -----------------------------------------------------------------

def test_the_refresher_behind_pgbouncer_notices_lost_notifications_and_sweeps(
        pooled_url, conn, tmp_path):
    """Listening through transaction pooling hears nothing: the probe NOTIFY does not
    arrive, the service says so once and keeps its interval sweeps, which work (a store
    of 8 tokens: more statements per connection than psycopg's prepare threshold)."""
    store = TokenStore(tmp_path / "tokens.json")
    due = {f"due-{i}": make_token(conn, "3 days", user=f"pgb-due-{i}") for i in range(4)}
    fresh = {f"fresh-{i}": make_token(conn, "20 days", user=f"pgb-fresh-{i}") for i in range(4)}
    for name, token in {**due, **fresh}.items():
        store.put(name, token)
    service = refresher("--store", str(store.path), "--database", pooled_url,
                        "--sweep-interval", "1", "--min-sweep-interval", "0")
    try:
        wait_for(lambda: all(store.get(n).token != t for n, t in due.items()), timeout=30,
                 what="the due tokens")
        wait_for(lambda: any(e["event"].startswith("notifications do not reach the listener")
                             for e in service.events()), timeout=30,
                 what="the listener's warning")
        # Added after the start: only an interval sweep can find it.
        late = make_token(conn, "3 days", user="pgb-late")
        store.put("late", late)
        wait_for(lambda: store.get("late").token != late, timeout=30,
                 what="the late token, by a sweep")
    finally:
        code = service.stop()
    assert code == 0, "\n".join(service.lines)
    events = service.events()
    warning = next(e for e in events if e["event"].startswith("notifications do not reach"))
    assert warning["level"] == "warning" and "--listen-database" in warning["hint"]
    assert "listening" not in [e["event"] for e in events]
    sweeps = [e for e in events if e["event"] == "sweep done"]
    assert len(sweeps) >= 2 and {e["trigger"] for e in sweeps[1:]} == {"interval"}
    assert all(e.get("failed", 0) == 0 for e in sweeps), sweeps
    for name in (*due, "late"):
        assert api.validate(conn, store.get(name).token)["is_valid"]
    for name, token in fresh.items():
        assert store.get(name).token == token
    held = conn.execute("SELECT h.tokens_held FROM auth.refresher_heartbeat AS h"
                        " WHERE h.instance LIKE %s", (f"%:{store.path.resolve()}",)).fetchone()
    assert held == (9,), "the heartbeat went through PgBouncer too"


def test_the_refresher_listens_on_postgresql_and_sweeps_through_pgbouncer(
        pooled_url, db_url, conn, tmp_path):
    """--listen-database with PostgreSQL's own address: the batch job's NOTIFY wakes the
    service long before its hourly sweep, which runs through PgBouncer."""
    store = TokenStore(tmp_path / "tokens.json")
    idle = make_token(conn, "10 days", "API", user="pgb-listen")
    store.put("idle", idle)
    service = refresher("--store", str(store.path), "--database", pooled_url,
                        "--listen-database", db_url, "--sweep-interval", "3600",
                        "--min-sweep-interval", "0")
    try:
        wait_for(lambda: "listening" in [e["event"] for e in service.events()], timeout=30,
                 what="listening")
        assert store.get("idle").token == idle, "not due yet"
        api.set_refresh_policy(conn, "API", refresh_threshold="11 days")
        try:
            assert api.refresh_batch(conn)["details"]["counts"]["enqueued"] >= 1
            wait_for(lambda: store.get("idle").token != idle, timeout=30,
                     what="the notified refresh")
        finally:
            api.set_refresh_policy(conn, "API", refresh_threshold="7 days")
    finally:
        code = service.stop()
    assert code == 0, "\n".join(service.lines)
    sweeps = [e for e in service.events() if e["event"] == "sweep done"]
    assert [e["trigger"] for e in sweeps] == ["start", "notify"]
    assert api.validate(conn, store.get("idle").token)["is_valid"]


# -- the CLI -------------------------------------------------------------------------------

def cli(url: str, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], input=stdin, capture_output=True, text=True,
                          env={**os.environ, "DATABASE_URL": url}, timeout=120)


def test_the_cli_works_through_pgbouncer(pooled_url, conn, tmp_path):
    issued = cli(pooled_url, "issue", "--user", "pgb-cli", "--tenant", "bouncer", "--ttl", "3d")
    assert issued.returncode == 0, issued.stderr
    token = issued.stdout.strip()
    assert cli(pooled_url, "validate", "-", stdin=token).returncode == 0
    status = cli(pooled_url, "status", "-", stdin=token)
    assert status.returncode == 0 and "EXPIRING_SOON" in status.stdout, status.stdout
    diagnosed = cli(pooled_url, "diagnose", "-", stdin=token)
    assert "REFRESH_DRY_RUN" in diagnosed.stdout, diagnosed.stdout + diagnosed.stderr
    refreshed = cli(pooled_url, "refresh", "-", stdin=token)
    assert refreshed.returncode == 0, refreshed.stderr
    new = refreshed.stdout.strip()
    assert new != token and api.validate(conn, new)["is_valid"]
    assert cli(pooled_url, "revoke", "-", stdin=new).returncode == 0
    assert cli(pooled_url, "validate", "-", stdin=new).returncode == 1

    # One call per batch of 1: more executions of one statement than the prepare threshold.
    for i in range(8):
        make_token(conn, "3 days", "API_KEY", user=f"pgb-batch-{i}")
    batch = cli(pooled_url, "refresh-batch", "--batch-size", "1")
    assert batch.returncode == 0, batch.stderr
    assert "8 tokens due: 8 were extended" in batch.stdout, batch.stdout
    assert "prepared statement" not in batch.stderr

    alerts = cli(pooled_url, "alerts")
    assert alerts.stdout.startswith("PYVAULT "), alerts.stdout + alerts.stderr
    assert alerts.returncode in (0, 1, 2)
    metrics = cli(pooled_url, "metrics")
    assert metrics.returncode == 0, metrics.stderr
    assert "pyvault_tokens_up 1.0" in metrics.stdout
    assert "pyvault_tokens_batch_last_run_duration_seconds" in metrics.stdout
    page = tmp_path / "dashboard.html"
    drawn = cli(pooled_url, "dashboard", "--out", str(page))
    assert drawn.returncode == 0 and page.stat().st_size > 100_000, drawn.stderr


def test_schedule_from_another_database_through_pgbouncer(pooled_url, bouncer, cluster):
    """pg_cron lives in the cluster's postgres database: schedule connects there through
    the same PgBouncer, checks pg_cron's schema in pg_depend and calls it."""
    with cluster.admin() as admin:
        admin.execute("CREATE EXTENSION IF NOT EXISTS pg_cron")  # as tests/test_batch.py
    done = cli(pooled_url, "schedule", "--job-name", "pgbouncer-job")
    assert done.returncode == 0, done.stderr
    with psycopg.connect(bouncer.url("postgres"), autocommit=True,
                         prepare_threshold=None) as cron:
        jobs = cron.execute("SELECT jobname FROM cron.job WHERE jobname LIKE 'pgbouncer-job%'"
                            " ORDER BY 1").fetchall()
    assert ("pgbouncer-job",) in jobs
    gone = cli(pooled_url, "unschedule", "--job-name", "pgbouncer-job")
    assert gone.returncode == 0, gone.stderr
    with psycopg.connect(bouncer.url("postgres"), autocommit=True,
                         prepare_threshold=None) as cron:
        assert cron.execute("SELECT count(*) FROM cron.job WHERE jobname LIKE"
                            " 'pgbouncer-job%'").fetchone()[0] == 0
