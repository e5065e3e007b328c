"""A real hot-standby replica on loopback: validation there, refresh deferred there and
routed to the primary by the ASGI middleware, and validation throughput with and
without the replica (pgbench; the numbers go into docs/scaling.md).

The primary is a cluster of its own (wal_level=replica, max_wal_senders; initdb -A trust
already allows replication connections from 127.0.0.1). The standby is made with
``pg_basebackup -R -X stream`` (as the postgres user when we are root) and started from
that data directory on another free port. The primary is migrated after the standby is
streaming, so the package itself arrives on the replica through WAL.

QUICK: pgbench runs of 4 s; ``PYVAULT_SOAK=1``: 20 s and ten times the tokens.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import psycopg
import pytest
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool
from starlette.applications import Starlette
from starlette.routing import Route

from pyvault_tokens.asgi import TokenRefreshMiddleware
from pyvault_tokens.embedded import PG_BIN, SERVER_USER, EmbeddedPostgresql
from tests.harness import prepare_database
from tests.profile import profile
from tests.servers import CountingPool, bearer, whoami
from tests.tokens import make_token, successors

BENCH_SECONDS = profile(3, 20)
BENCH_TOKENS = profile(20_000, 200_000)
DATABASE = "rep"
SERVER_ARGS = ("-h 127.0.0.1 -F -c logging_collector=off -c max_connections=200"
               " -c wal_level=replica -c max_wal_senders=5 -c hot_standby=on")
VALIDATE = "SELECT * FROM auth.validate_production_api_token(%s, %s)"
VALIDATE_AND_REFRESH = "SELECT * FROM auth.validate_and_refresh_api_token(%s)"
AS_SERVER_USER = ({"user": SERVER_USER, "group": SERVER_USER, "extra_groups": []}
                  if os.geteuid() == 0 else {})


def _tmp_root() -> str:
    tmp = tempfile.gettempdir()
    return "/var/tmp" if tmp.startswith("/root") else tmp  # noqa: S108 - mkdtemp under it


@dataclass
class Replication:
    primary: EmbeddedPostgresql
    standby: EmbeddedPostgresql

    def url(self, server: EmbeddedPostgresql) -> str:
        return server.url(database=DATABASE)

    @property
    def primary_url(self) -> str:
        return self.url(self.primary)

    @property
    def replica_url(self) -> str:
        return self.url(self.standby)

    def wait_for_replay(self, timeout: float = 30) -> None:
        """Until the standby has replayed everything the primary has written so far."""
        with psycopg.connect(self.primary.url(database="postgres"), autocommit=True) as p:
            lsn = p.execute("SELECT pg_current_wal_lsn()").fetchone()[0]
        with psycopg.connect(self.standby.url(database="postgres"), autocommit=True) as s:
            deadline = time.monotonic() + timeout
            while not s.execute("SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn",
                                (lsn,)).fetchone()[0]:
                assert time.monotonic() < deadline, "the standby did not catch up"
                time.sleep(0.02)


@pytest.fixture(scope="module")
def replication() -> Iterator[Replication]:
    primary = EmbeddedPostgresql(postgres_args=SERVER_ARGS)
    standby = None
    base = tempfile.mkdtemp(prefix="pyvault-standby-", dir=_tmp_root())
    try:
        if os.geteuid() == 0:
            shutil.chown(base, SERVER_USER, SERVER_USER)
        os.chmod(base, 0o700)
        backup = subprocess.run(
            [str(PG_BIN / "pg_basebackup"), "-h", "127.0.0.1", "-p",
             str(primary.settings["port"]), "-U", "postgres", "-D", f"{base}/data", "-R",
             "-X", "stream", "-c", "fast", "--no-sync"],
            capture_output=True, text=True, timeout=120, **AS_SERVER_USER)
        assert backup.returncode == 0, backup.stderr
        assert Path(base, "data", "standby.signal").exists()
        standby = EmbeddedPostgresql(base_dir=base, postgres_args=SERVER_ARGS)
        with psycopg.connect(standby.url(database="postgres"), autocommit=True) as s:
            assert s.execute("SELECT pg_is_in_recovery()").fetchone()[0] is True
        with psycopg.connect(primary.url(database="postgres"), autocommit=True) as p:
            p.execute(f"CREATE DATABASE {DATABASE}")
            deadline = time.monotonic() + 30
            while not p.execute("SELECT count(*) FROM pg_stat_replication"
                                " WHERE state = 'streaming'").fetchone()[0]:
                assert time.monotonic() < deadline, "the standby is not streaming"
                time.sleep(0.05)
        prepare_database(primary.url(database=DATABASE))
        rep = Replication(primary, standby)
        rep.wait_for_replay()
        yield rep
    finally:
        if standby is not None:
            standby.stop()
        primary.stop()
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="module")
def primary(replication) -> Iterator[psycopg.Connection]:
    with psycopg.connect(replication.primary_url, autocommit=True) as c:
        yield c


@pytest.fixture(scope="module")
def replica(replication) -> Iterator[psycopg.Connection]:
    with psycopg.connect(replication.replica_url, autocommit=True, row_factory=dict_row) as c:
        yield c


def test_the_package_arrived_through_wal(replica):
    assert replica.execute("SELECT pg_is_in_recovery() AS r").fetchone()["r"] is True
    assert replica.execute("SELECT current_setting('transaction_read_only') AS ro"
                           ).fetchone()["ro"] == "on"
    assert replica.execute("SELECT to_regprocedure('auth.validate_and_refresh_api_token"
                           "(text,text)') IS NOT NULL AS ok").fetchone()["ok"]


def test_validation_on_the_replica(replication, primary, replica):
    far = make_token(primary, "30 days", scope="{api:read}", user="replica")
    revoked = make_token(primary, "30 days", user="replica")
    primary.execute("SELECT auth.revoke_api_token(%s)", (revoked,))
    replication.wait_for_replay()
    cases = {
        (far, "api:read"): (True, "Token is valid"),
        (far, "api:write"): (False, "Token lacks the required scope"),
        ("ovt_prod_" + "0" * 64, "api:read"): (False, "Token not found"),
        (far.upper(), "api:read"): (False, "Token format is invalid"),
        ("not a token", "api:read"): (False, "Token format is invalid"),
        (None, "api:read"): (False, "Token format is invalid"),
        (revoked, "api:read"): (False, "Token has been revoked"),
    }
    for (token, scope), expected in cases.items():
        row = replica.execute(VALIDATE, (token, scope)).fetchone()
        assert (row["is_valid"], row["message"]) == expected, (token, scope)
    status = replica.execute("SELECT * FROM auth.get_token_refresh_status(%s)",
                             (far,)).fetchone()
    assert status["is_valid"] and status["refresh_reason"] == "NO_REFRESH_NEEDED"


def test_refresh_on_the_replica_is_deferred_never_an_error(replication, primary, replica):
    near = make_token(primary, "3 days", user="replica")
    rotated = make_token(primary, "3 days", user="replica")
    new = primary.execute(VALIDATE_AND_REFRESH, (rotated,)).fetchone()[5]
    replication.wait_for_replay()

    row = replica.execute(VALIDATE_AND_REFRESH, (near,)).fetchone()
    assert row["is_valid"] and row["refresh_reason"] == "REFRESH_DEFERRED_READ_ONLY"
    assert row["new_token"] is None and not row["was_refreshed"]
    row = replica.execute("SELECT * FROM auth.refresh_production_token_enhanced(%s)",
                          (near,)).fetchone()
    assert not row["success"] and row["refresh_reason"] == "REFRESH_DEFERRED_READ_ONLY"
    status = replica.execute("SELECT * FROM auth.get_token_refresh_status(%s)",
                             (near,)).fetchone()
    assert status["refresh_recommended"] and status["refresh_reason"] == "EXPIRING_SOON"
    with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
        replica.execute("SELECT * FROM auth.refresh_expiring_tokens_batch()")
    assert successors(primary, near) == 0, "nothing was refreshed"

    # A successor made on the primary is handed out by the replica (no write needed).
    again = replica.execute(VALIDATE_AND_REFRESH, (rotated,)).fetchone()
    assert again["refresh_reason"] == "ALREADY_REFRESHED" and again["new_token"] == new


@contextlib.asynccontextmanager
async def _middleware_client(replication, max_size: int) -> AsyncIterator[
        tuple[httpx.AsyncClient, CountingPool, CountingPool]]:
    """An in-process client of TokenRefreshMiddleware over a pool of the primary and one of
    the replica, each counting its checkouts."""
    async with AsyncConnectionPool(replication.primary_url, min_size=1, max_size=max_size,
                                   timeout=5) as p, \
            AsyncConnectionPool(replication.replica_url, min_size=1, max_size=max_size,
                                timeout=5) as r:
        prim, repl = CountingPool(p), CountingPool(r)
        mw = TokenRefreshMiddleware(Starlette(routes=[Route("/", whoami)]), prim,
                                    replica_pool=repl)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=mw),
                                     base_url="http://api") as client:
            yield client, prim, repl


def test_the_middleware_validates_on_the_replica_and_refreshes_on_the_primary(
        replication, primary):
    far = make_token(primary, "30 days", user="mw-replica")
    near = make_token(primary, "3 days", user="mw-replica")
    replication.wait_for_replay()
    seen: dict[str, object] = {}

    async def scenario() -> None:
        async with _middleware_client(replication, max_size=4) as (client, prim, repl):
            async def get(token: str) -> tuple[httpx.Response, int, int]:
                before = (prim.count, repl.count)
                resp = await client.get("/", headers=bearer(token))
                return resp, prim.count - before[0], repl.count - before[1]

            seen["far"] = await get(far)
            seen["near"] = await get(near)
            new = seen["near"][0].headers["x-new-token"]
            seen["new_before_replay"] = await get(new)
            await asyncio.to_thread(replication.wait_for_replay)
            seen["new_after_replay"] = await get(new)
            seen["near_again"] = await get(near)
            # Replay paused: a token issued now is unknown to the replica, and the
            # middleware asks the primary before refusing it.
            with psycopg.connect(replication.standby.url(database="postgres"),
                                 autocommit=True) as s:
                s.execute("SELECT pg_wal_replay_pause()")
                try:
                    fresh = await asyncio.to_thread(make_token, primary, "30 days",
                                                    "PRODUCTION", "{api:read}", "acme",
                                                    "mw-replica")
                    seen["fresh_while_paused"] = await get(fresh)
                finally:
                    s.execute("SELECT pg_wal_replay_resume()")

    asyncio.run(scenario())
    resp, on_primary, on_replica = seen["far"]
    assert resp.status_code == 200 and (on_primary, on_replica) == (0, 1), "replica only"
    assert "x-new-token" not in resp.headers

    resp, on_primary, on_replica = seen["near"]
    assert resp.status_code == 200 and (on_primary, on_replica) == (1, 1)
    assert resp.headers["x-refresh-reason"] == "EXPIRING_SOON"
    new = resp.headers["x-new-token"]
    assert successors(primary, near) == 1, "refreshed on the primary, once"

    resp, on_primary, on_replica = seen["new_before_replay"]
    assert resp.status_code == 200, "a new token not yet replayed is confirmed on the primary"
    resp, on_primary, on_replica = seen["new_after_replay"]
    assert resp.status_code == 200 and (on_primary, on_replica) == (0, 1), "replica only"
    resp, on_primary, on_replica = seen["near_again"]
    assert resp.status_code == 200 and resp.headers["x-new-token"] == new
    assert (on_primary, on_replica) == (0, 1), "the kept successor comes from the replica"
    resp, on_primary, on_replica = seen["fresh_while_paused"]
    assert resp.status_code == 200 and (on_primary, on_replica) == (1, 1)

    replication.wait_for_replay()
    with psycopg.connect(replication.replica_url, autocommit=True) as r:
        assert r.execute(VALIDATE, (new, "api:read")).fetchone()[0] is True


def test_using_the_successor_through_a_replica_starts_the_predecessors_grace(
        replication, primary):
    old = make_token(primary, "3 days", user="grace-replica")
    replication.wait_for_replay()

    async def scenario() -> None:
        async with _middleware_client(replication, max_size=2) as (client, _, _):
            first = await client.get("/", headers=bearer(old))
            new = first.headers["x-new-token"]
            await asyncio.to_thread(replication.wait_for_replay)
            for _ in range(3):  # the client has switched to the new token
                resp = await client.get("/", headers=bearer(new))
                assert resp.status_code == 200

    asyncio.run(scenario())
    row = primary.execute(
        "SELECT s.last_used_at IS NOT NULL, o.valid_until <= now() + p.grace_period"
        " FROM auth.api_token_bridge AS o"
        " JOIN auth.token_refresh_policy AS p USING (token_type)"
        " JOIN auth.api_token_bridge AS s ON s.api_token_hk = o.successor_hk"
        " WHERE o.token_hash = sha256(convert_to(%s, 'UTF8'))", (old,)).fetchone()
    assert row[0], "the successor's use is recorded on the primary"
    assert row[1], "the predecessor's grace window started"


# -- throughput ----------------------------------------------------------------------------

# Keys as auth._issue_token makes them; known plaintexts (pgbench derives them from i).
SEED = """
WITH k AS (
    SELECT i, 'tok_rep_' || i AS bk,
           auth._hash_key(convert_to('tok_rep_' || i, 'UTF8')) AS hk,
           sha256(convert_to('ovt_prod_' || encode(sha256(convert_to('rep' || i, 'UTF8')),
                                                   'hex'), 'UTF8')) AS token_hash
    FROM generate_series(1, %(n)s) AS i
), hub AS (
    INSERT INTO auth.api_token_h (api_token_hk, api_token_bk, tenant_hk, record_source)
    SELECT hk, bk, %(tenant)s, 'tests:replica' FROM k
), link AS (
    INSERT INTO auth.user_token_l (link_user_token_hk, user_hk, api_token_hk, tenant_hk,
                                   record_source)
    SELECT auth._hash_key(%(user)s || hk), %(user)s, hk, %(tenant)s, 'tests:replica' FROM k
), sat AS (
    INSERT INTO auth.api_token_s (api_token_hk, hash_diff, token_hash, token_type, scope,
                                  expires_at, record_source)
    SELECT hk, auth._token_hash_diff(token_hash, 'PRODUCTION', '{api:read}',
                                     now() + interval '30 days', false, NULL),
           token_hash, 'PRODUCTION', '{api:read}', now() + interval '30 days', 'tests:replica'
    FROM k
)
INSERT INTO auth.api_token_bridge (
    token_hash, api_token_hk, user_hk, tenant_hk, token_type, scope, issued_at, expires_at,
    valid_until, refresh_after, record_use_after, family_hk, family_started_at)
SELECT token_hash, hk, %(user)s, %(tenant)s, 'PRODUCTION', '{api:read}', now(),
       now() + interval '30 days', now() + interval '30 days', now() + interval '23 days',
       'infinity', hk, now()
FROM k
"""
PGBENCH_SCRIPT = (
    "\\set i random(1, :n)\n"
    "SELECT is_valid FROM auth.validate_production_api_token("
    "'ovt_prod_' || encode(sha256(convert_to('rep' || :i, 'UTF8')), 'hex'));\n"
)


def _pgbench(server: EmbeddedPostgresql, script: Path, clients: int) -> subprocess.Popen:
    return subprocess.Popen(
        [str(PG_BIN / "pgbench"), "-n", "-M", "prepared", "-f", str(script),
         "-T", str(BENCH_SECONDS), "-c", str(clients), "-j", str(clients),
         "-D", f"n={BENCH_TOKENS}", "-h", "127.0.0.1", "-p", str(server.settings["port"]),
         "-U", "postgres", DATABASE],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _result(proc: subprocess.Popen) -> float:
    out, err = proc.communicate(timeout=BENCH_SECONDS + 120)
    assert proc.returncode == 0, err
    failed = re.search(r"number of failed transactions: (\d+)", out)
    assert failed is None or failed.group(1) == "0", out
    tps = re.search(r"tps = ([\d.]+) \(without initial connection time\)", out)
    assert tps, out
    return float(tps.group(1))


@contextlib.contextmanager
def _pinned(server: EmbeddedPostgresql, cpus: set[int]) -> Iterator[None]:
    pid = server.child_process.pid  # setpriv execs the postmaster: this is its pid
    before = os.sched_getaffinity(pid)
    os.sched_setaffinity(pid, cpus)
    try:
        yield
    finally:
        os.sched_setaffinity(pid, before)


def test_validation_throughput_with_and_without_the_replica(replication, primary, tmp_path):
    tenant = primary.execute("SELECT auth.register_tenant('rep-bench')").fetchone()[0]
    user = primary.execute("SELECT auth.register_user(%s, 'rep-bench')", (tenant,)
                           ).fetchone()[0]
    primary.execute(SEED, {"n": BENCH_TOKENS, "tenant": tenant, "user": user})
    primary.execute("VACUUM ANALYZE auth.api_token_bridge")
    primary.execute("CHECKPOINT")
    replication.wait_for_replay()
    with psycopg.connect(replication.replica_url, autocommit=True) as r:
        probe = r.execute("SELECT is_valid FROM auth.validate_production_api_token('ovt_prod_'"
                          " || encode(sha256(convert_to('rep' || %s, 'UTF8')), 'hex'))",
                          (BENCH_TOKENS,)).fetchone()[0]
    assert probe is True, "the seeded tokens validate on the replica"
    script = tmp_path / "validate.sql"
    script.write_text(PGBENCH_SCRIPT)

    results = {
        "primary, 2 clients": _result(_pgbench(replication.primary, script, 2)),
        "primary, 4 clients": _result(_pgbench(replication.primary, script, 4)),
        "replica, 2 clients": _result(_pgbench(replication.standby, script, 2)),
    }
    both = [_pgbench(replication.primary, script, 2), _pgbench(replication.standby, script, 2)]
    split = [_result(p) for p in both]
    results["primary 2 + replica 2 clients (sum)"] = sum(split)
    results["  of which primary"] = split[0]
    results["  of which replica"] = split[1]
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) >= 2:
        # A stand-in for a replica on hardware of its own: each server (every backend
        # forked from its postmaster) gets one CPU; pgbench runs on either.
        with _pinned(replication.primary, {cpus[0]}), _pinned(replication.standby, {cpus[1]}):
            results["one CPU: primary alone, 2 clients"] = _result(
                _pgbench(replication.primary, script, 2))
            both = [_pgbench(replication.primary, script, 2),
                    _pgbench(replication.standby, script, 2)]
            split = [_result(p) for p in both]
        results["one CPU each: primary 2 + replica 2 (sum)"] = sum(split)
    lines = [f"validation TPS, {BENCH_TOKENS} tokens, {BENCH_SECONDS} s per run, "
             f"{os.cpu_count()} CPUs (pgbench -M prepared, same machine):"]
    lines += [f"  {name:40s} {tps:10.0f}" for name, tps in results.items()]
    print("\n".join(lines))
    out = os.environ.get("PYVAULT_SCALING_RESULTS")
    if out:
        Path(out).write_text(json.dumps({"tokens": BENCH_TOKENS, "seconds": BENCH_SECONDS,
                                         "cpus": os.cpu_count(), "tps": results}, indent=2))
    assert all(tps > 0 for tps in results.values())
