#!/usr/bin/env python3
"""Benchmark the token hot path with pgbench: `make bench` (or `make bench-quick`).

    .venv/bin/python bench/run.py [--quick] [--database URL] [--output PATH]

Without --database an embedded throwaway cluster is started (and stopped at the end).
The database is migrated, then tokens are bulk-loaded with set-based SQL straight into
the vault and the bridge, mirroring what auth._issue_token writes. The plaintext tokens
are made once, at load time, and kept in bench.token (i bigint PRIMARY KEY, token text):
a bench-only table of a throwaway database. Every pgbench script in bench/pgbench/ draws
`\\set i random(...)` and reads token i by primary key in the statement it measures,
`(SELECT t.token FROM bench.token AS t WHERE t.i = :i)`; the driver row measures that
read and the round trip alone, so what a row costs beyond it is the code it measures.
On the embedded cluster pgbench connects through the Unix socket (no TCP loopback).

Token ranges (i is global; bench.token_range records them):

- read: far from expiry (no refresh due), record_use_after = 'infinity', so the usage
  debounce never writes and the read rows measure validation alone;
- hot: far from expiry with the default debounce (record_use_after = '-infinity'); it is
  reset before each run, so every hot token records one use per run (pessimistic: in a
  steady state a token writes once per 60 s);
- rotate: 2-3 days from expiry (refresh due), consumed exactly once each by the rotation
  rows (pgbench -t with per-client blocks of distinct tokens);
- due: 2-3 days from expiry, half PRODUCTION (ROTATE) and half API_KEY (EXTEND), twice
  the batch size: one call of auth.refresh_expiring_tokens_batch (one transaction) takes
  the first n_due, then CALL auth.refresh_expiring_tokens_job() (what pg_cron runs, one
  commit per batch) takes the other n_due.

Figures are best-of-N (TPS max, p50 and p99 min) with the min-max TPS spread; latency
percentiles come from pgbench's per-transaction logs. Speed is reported, never asserted.
"""

from __future__ import annotations

import argparse
import datetime as dt
import glob
import json
import os
import platform
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
from rich.console import Console
from rich.table import Table

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from pyvault_tokens.migrate import migrate  # noqa: E402

PG_BIN = Path("/usr/lib/postgresql/15/bin")
PGBENCH = Path(os.environ.get("PGBENCH", PG_BIN / "pgbench"))
SCRIPTS = BENCH_DIR / "pgbench"
RECORD_SOURCE = "pyvault:bench"
DATABASE = "pyvault_bench"

out = Console(width=None if sys.stdout.isatty() else 250, highlight=False)
log = Console(stderr=True, highlight=False)


def bench_token(conn: psycopg.Connection, i: int) -> str:
    """Token i of the benchmark data, from bench.token as the pgbench scripts read it."""
    return conn.execute("SELECT token FROM bench.token WHERE i = %s", (i,)).fetchone()[0]


# --------------------------------------------------------------------------- plan


@dataclass
class Plan:
    quick: bool
    n_read: int
    n_hot: int
    n_due: int
    rotate_per_run: int
    duration: float
    reps: int
    clients: tuple[int, ...] = (2, 8)
    tenants: int = 100
    users: int = 10_000
    sampling_rate: float = 0.1
    profile: bool = False

    @classmethod
    def make(cls, args: argparse.Namespace) -> Plan:
        if args.quick:
            plan = cls(quick=True, n_read=20_000, n_hot=1_000, n_due=2_000,
                       rotate_per_run=400, duration=2.0, reps=1, tenants=10, users=1_000,
                       sampling_rate=1.0)
        else:
            plan = cls(quick=False, n_read=1_000_000, n_hot=10_000, n_due=100_000,
                       rotate_per_run=4_000, duration=10.0, reps=3)
        if args.tokens:
            plan.n_read = args.tokens
        if args.duration:
            plan.duration = args.duration
        if args.reps:
            plan.reps = args.reps
        plan.profile = args.profile
        return plan

    # i ranges, in load order
    @property
    def ranges(self) -> dict[str, tuple[int, int]]:
        n_rotate = len(ROTATION_ROWS) * len(self.clients) * self.reps * self.rotate_per_run
        spans = [("read", self.n_read), ("hot", self.n_hot), ("rotate", n_rotate),
                 ("due", 2 * self.n_due)]
        ranges, first = {}, 1
        for kind, count in spans:
            ranges[kind] = (first, first + count - 1)
            first += count
        return ranges


@dataclass(frozen=True)
class Row:
    id: str
    label: str
    script: str
    kind: str  # token range it draws from
    writes: bool = False  # runs after the read-only rows of a repetition


READ_ROWS = [
    Row("driver", "driver: read a pre-made token by id, no probe", "driver.sql", "read"),
    Row("limit_bridge", "LIMIT: index probe, api_token_bridge", "limit_bridge.sql", "read"),
    Row("plpgsql_floor", "PL/pgSQL floor: LIMIT probe in a SECURITY DEFINER function",
        "plpgsql_floor.sql", "read"),
    Row("validate", "validate_production_api_token", "validate.sql", "read"),
    Row("validate_and_refresh", "validate_and_refresh, no refresh due",
        "validate_and_refresh.sql", "read"),
    Row("validate_and_refresh_debounce", "validate_and_refresh, 60 s debounce (hot set)",
        "validate_and_refresh.sql", "hot", writes=True),
    Row("peer_seed", "peer: seed shape, UPDATE+INSERT per call", "peer_seed.sql", "read",
        writes=True),
]
ROTATION_ROWS = [
    Row("rotate_validate_and_refresh", "rotations/s: validate_and_refresh (due)",
        "rotate_validate_and_refresh.sql", "rotate", writes=True),
    Row("rotate_refresh_enhanced", "rotations/s: refresh_production_token_enhanced(t,7,true)",
        "rotate_refresh_enhanced.sql", "rotate", writes=True),
]
LIMIT_ID = "limit_bridge"
DRIVER_ID = "driver"


# --------------------------------------------------------------------------- load

LOAD_TENANTS = """
INSERT INTO auth.tenant_h (tenant_hk, tenant_bk, load_date, record_source)
SELECT sha256(convert_to('tenant:' || s.bk, 'UTF8')), s.bk, now() - interval '400 days',
       %(source)s
FROM (SELECT 'bench-tenant-' || t AS bk FROM generate_series(0, %(tenants)s - 1) AS t) AS s
"""

LOAD_USERS = """
CREATE UNLOGGED TABLE bench.load_user AS
SELECT u.n, t.tenant_hk, 'bench-user-' || u.n AS user_bk,
       sha256(t.tenant_hk || convert_to('user:bench-user-' || u.n, 'UTF8')) AS user_hk
FROM generate_series(0, %(users)s - 1) AS u (n)
INNER JOIN auth.tenant_h AS t ON t.tenant_bk = 'bench-tenant-' || mod(u.n, %(tenants)s)
"""

LOAD_USER_HUB = """
INSERT INTO auth.user_h (user_hk, user_bk, tenant_hk, load_date, record_source)
SELECT user_hk, user_bk, tenant_hk, now() - interval '400 days', %(source)s
FROM bench.load_user
"""

LOAD_TOKEN_TABLE = """
CREATE UNLOGGED TABLE bench.load_token (
    i bigint NOT NULL,
    kind text NOT NULL,
    token text NOT NULL,
    token_hash bytea NOT NULL,
    api_token_hk bytea NOT NULL,
    api_token_bk text NOT NULL,
    user_hk bytea NOT NULL,
    tenant_hk bytea NOT NULL,
    token_type text NOT NULL,
    scope text[] NOT NULL,
    issued_at timestamptz NOT NULL,
    expires_at timestamptz NOT NULL,
    refresh_after timestamptz NOT NULL,
    record_use_after timestamptz NOT NULL
)
"""

# One range of tokens. issued_at = expires_at - the policy's time_to_live (the family
# starts then); refresh_after follows auth._refresh_after. fresh: expires in 10-30 days
# (no refresh due for 3+ days); due: expires in 2-3 days (refresh due now).
LOAD_TOKENS = """
INSERT INTO bench.load_token
SELECT g.i, %(kind)s, t.token, sha256(convert_to(t.token, 'UTF8')),
       sha256(convert_to(x.bk, 'UTF8')), x.bk,
       u.user_hk, u.tenant_hk, x.token_type, %(scope)s,
       x.expires_at - p.time_to_live, x.expires_at,
       CASE WHEN x.expires_at - p.time_to_live + p.max_lifetime <= x.expires_at
            THEN 'infinity'::timestamptz
            ELSE x.expires_at - p.refresh_threshold END,
       %(record_use_after)s::timestamptz
FROM generate_series(%(first)s::bigint, %(last)s::bigint) AS g (i)
CROSS JOIN LATERAL (
    SELECT 'ovt_prod_' || encode(sha256(convert_to('bench' || g.i, 'UTF8')), 'hex') AS token
) AS t
CROSS JOIN LATERAL (
    SELECT
        'tok_' || left(encode(sha256(convert_to('bench-bk' || g.i, 'UTF8')), 'hex'), 32) AS bk,
        CASE WHEN %(mixed)s AND mod(g.i, 2) = 0 THEN 'API_KEY' ELSE 'PRODUCTION' END
            AS token_type,
        CASE WHEN %(due)s
             THEN now() + interval '2 days' + mod(g.i, 86400) * interval '1 second'
             ELSE now() + interval '10 days' + mod(g.i, 20 * 86400) * interval '1 second'
        END AS expires_at
) AS x
INNER JOIN auth.token_refresh_policy AS p ON p.token_type = x.token_type
INNER JOIN bench.load_user AS u ON u.n = mod(g.i, %(users)s)
"""

# The same rows auth._issue_token writes: hub, user link, satellite, bridge.
LOAD_VAULT = [
    ("auth.api_token_h", """
INSERT INTO auth.api_token_h (api_token_hk, api_token_bk, tenant_hk, load_date, record_source)
SELECT api_token_hk, api_token_bk, tenant_hk, issued_at, %(source)s FROM bench.load_token"""),
    ("auth.user_token_l", """
INSERT INTO auth.user_token_l (
    link_user_token_hk, user_hk, api_token_hk, tenant_hk, load_date, record_source
)
SELECT sha256(user_hk || api_token_hk), user_hk, api_token_hk, tenant_hk, issued_at, %(source)s
FROM bench.load_token"""),
    ("auth.api_token_s", """
INSERT INTO auth.api_token_s (
    api_token_hk, load_date, hash_diff, token_hash, token_type, scope, expires_at,
    record_source
)
SELECT api_token_hk, issued_at,
       auth._token_hash_diff(token_hash, token_type, scope, expires_at, FALSE, NULL),
       token_hash, token_type, scope, expires_at, %(source)s
FROM bench.load_token"""),
    ("auth.api_token_bridge", """
INSERT INTO auth.api_token_bridge (
    token_hash, api_token_hk, user_hk, tenant_hk, token_type, scope, issued_at,
    expires_at, valid_until, refresh_after, record_use_after, family_hk,
    family_started_at, generation
)
SELECT token_hash, api_token_hk, user_hk, tenant_hk, token_type, scope, issued_at,
       expires_at, expires_at, refresh_after, record_use_after, api_token_hk,
       issued_at, 0
FROM bench.load_token"""),
]

# Foreign keys are not checked during the load (session_replication_role = replica, when
# we may); these anti-joins check what they would have.
LOAD_CHECKS = [
    ("api_token_h -> tenant_h", """
SELECT count(*) FROM auth.api_token_h AS h
WHERE NOT EXISTS (SELECT FROM auth.tenant_h AS t WHERE t.tenant_hk = h.tenant_hk)"""),
    ("user_token_l -> user_h, api_token_h", """
SELECT count(*) FROM auth.user_token_l AS l
WHERE NOT EXISTS (SELECT FROM auth.user_h AS u WHERE u.user_hk = l.user_hk)
   OR NOT EXISTS (SELECT FROM auth.api_token_h AS h WHERE h.api_token_hk = l.api_token_hk)"""),
    ("api_token_s -> api_token_h", """
SELECT count(*) FROM auth.api_token_s AS s
WHERE NOT EXISTS (SELECT FROM auth.api_token_h AS h WHERE h.api_token_hk = s.api_token_hk)"""),
    ("api_token_bridge -> api_token_h, user_h", """
SELECT count(*) FROM auth.api_token_bridge AS b
WHERE NOT EXISTS (SELECT FROM auth.api_token_h AS h WHERE h.api_token_hk = b.api_token_hk)
   OR NOT EXISTS (SELECT FROM auth.user_h AS u WHERE u.user_hk = b.user_hk)"""),
]

# Tokens due for a refresh that nobody has acted on yet (a ROTATE token handed to the
# outbox has refresh_enqueued_at set).
DUE_COUNT = """
SELECT count(*) FROM auth.api_token_bridge AS b
WHERE b.refresh_after <= now() AND NOT b.is_revoked AND b.successor_hk IS NULL
  AND b.refresh_enqueued_at IS NULL
"""


def due_count(conn: psycopg.Connection) -> int:
    return counter(conn, DUE_COUNT)

# Rows written in auth and bench, and the bridge's updates (all, and HOT ones).
WRITES = """
SELECT coalesce(sum(n_tup_ins + n_tup_upd + n_tup_del), 0)::bigint,
       coalesce(sum(n_tup_upd) FILTER (WHERE relid = 'auth.api_token_bridge'::regclass), 0),
       coalesce(sum(n_tup_hot_upd) FILTER (WHERE relid = 'auth.api_token_bridge'::regclass), 0)
FROM pg_stat_user_tables WHERE schemaname IN ('auth', 'bench')
"""


def step(message: str):
    """Log a step and time it."""

    class _Step:
        def __enter__(self):
            self.t0 = time.perf_counter()
            log.print(f"[bold]•[/] {message} ...", end="")
            return self

        def __exit__(self, exc_type, exc, tb):
            if exc_type is None:
                log.print(f" {time.perf_counter() - self.t0:.1f} s")
            else:
                log.print(" [red]failed[/]")

    return _Step()


def check_empty(conn: psycopg.Connection) -> None:
    if conn.execute("SELECT to_regnamespace('bench') IS NOT NULL").fetchone()[0]:
        sys.exit("error: this database has a bench schema already; point --database at a "
                 "fresh database (the benchmark loads tokens and writes to it)")
    if conn.execute("SELECT EXISTS (SELECT FROM auth.api_token_h)").fetchone()[0]:
        sys.exit("error: this database has tokens already; point --database at a fresh "
                 "database (the benchmark loads its own tokens)")


def load_workers() -> int:
    return max(2, min(4, len(os.sched_getaffinity(0))))


def parallel(url: str, jobs: list[tuple[str, list[tuple[str, dict]]]], *,
             replica: bool) -> list:
    """Run independent lists of statements, each on its own connection, a few at a time.

    Returns the first column of each list's last statement when it returns rows.
    """

    def work(job):
        _name, statements = job
        with psycopg.connect(url, autocommit=True) as c:
            if replica:
                c.execute("SET session_replication_role = replica")
            c.execute("SET synchronous_commit = off")
            cur = None
            for sql, params in statements:
                cur = c.execute(sql, params)
            return cur.fetchone()[0] if cur is not None and cur.description else None

    with ThreadPoolExecutor(max_workers=load_workers()) as pool:
        return list(pool.map(work, jobs))


def load(conn: psycopg.Connection, url: str, plan: Plan) -> dict:
    """Bulk-load tenants, users and every token range; VACUUM ANALYZE."""
    info: dict = {"foreign_keys_checked_during_load": True, "workers": load_workers()}
    ranges = plan.ranges
    params = {"source": RECORD_SOURCE, "tenants": plan.tenants, "users": plan.users}
    with step("bench schema (the peer and the PL/pgSQL floor)"):
        for name in ("peer.sql", "plpgsql_floor.sql"):
            conn.execute((BENCH_DIR / "sql" / name).read_text(encoding="utf-8"))
        conn.execute("CREATE TABLE bench.token_range (kind text PRIMARY KEY, "
                     "first_i bigint NOT NULL, last_i bigint NOT NULL)")
        for kind, (first, last) in ranges.items():
            conn.execute("INSERT INTO bench.token_range VALUES (%s, %s, %s)", (kind, first, last))
    replica = bool(conn.execute("SELECT rolsuper FROM pg_roles "
                                "WHERE rolname = current_user").fetchone()[0])
    if replica:
        info["foreign_keys_checked_during_load"] = False
    else:
        log.print("  (not superuser: foreign keys are checked row by row during the load)")
    with step(f"{plan.tenants} tenants, {plan.users} users"):
        conn.execute(LOAD_TENANTS, params)
        conn.execute(LOAD_USERS, params)
        conn.execute("ALTER TABLE bench.load_user ADD PRIMARY KEY (n)")
        conn.execute(LOAD_USER_HUB, params)
    conn.execute(LOAD_TOKEN_TABLE)
    specs = {
        "read": {"due": False, "mixed": False, "record_use_after": "infinity"},
        "hot": {"due": False, "mixed": False, "record_use_after": "-infinity"},
        "rotate": {"due": True, "mixed": False, "record_use_after": "-infinity"},
        "due": {"due": True, "mixed": True, "record_use_after": "-infinity"},
    }
    total = sum(last - first + 1 for first, last in ranges.values())
    # Split every range into one slice per worker.
    workers = load_workers()
    derive: list[tuple[str, list]] = [(f"derive {w}", []) for w in range(workers)]
    for kind, (first, last) in ranges.items():
        step_size = -(-(last - first + 1) // workers)
        for w, lo in enumerate(range(first, last + 1, step_size)):
            derive[w][1].append((LOAD_TOKENS, {
                **params, **specs[kind], "kind": kind, "first": lo,
                "last": min(last, lo + step_size - 1), "scope": ["api:read", "api:write"]}))
    with step(f"derive {total:,} tokens (read {plan.n_read:,}, hot {plan.n_hot:,}, "
              f"rotate {ranges['rotate'][1] - ranges['rotate'][0] + 1:,}, "
              f"due {ranges['due'][1] - ranges['due'][0] + 1:,}) "
              f"with {workers} workers"):
        parallel(url, derive, replica=replica)
    # Biggest first, so the workers finish together.
    extra = ("bench.token, bench.hot_token, bench.peer_token", [
        # The pre-made plaintext tokens the pgbench scripts read by i (the due range is
        # only for the batch job, which needs no plaintext).
        ("CREATE TABLE bench.token AS SELECT i, token FROM bench.load_token "
         "WHERE kind <> 'due'", {}),
        ("ALTER TABLE bench.token ADD PRIMARY KEY (i)", {}),
        ("CREATE TABLE bench.hot_token AS SELECT token_hash FROM bench.load_token "
         "WHERE kind = 'hot'", {}),
        ("ALTER TABLE bench.hot_token ADD PRIMARY KEY (token_hash)", {}),
        ("INSERT INTO bench.peer_token (token_hash, api_token_hk, user_hk, tenant_hk, scope, "
         "expires_at) SELECT token_hash, api_token_hk, user_hk, tenant_hk, scope, expires_at "
         "FROM bench.load_token WHERE kind = 'read'", {}),
    ])
    vault = [(table, [(sql, params)]) for table, sql in LOAD_VAULT]
    order = ["auth.api_token_s", "auth.api_token_bridge", "auth.user_token_l",
             "auth.api_token_h"]
    vault.sort(key=lambda job: order.index(job[0]))
    with step("insert " + ", ".join(name for name, _ in vault) + " and the peer's tables"):
        parallel(url, [*vault, extra], replica=replica)
    conn.execute("DROP TABLE bench.load_token, bench.load_user")
    with step("check foreign keys"):
        bad = parallel(url, [(name, [(sql, {})]) for name, sql in LOAD_CHECKS], replica=False)
        for (name, _), count in zip(LOAD_CHECKS, bad, strict=True):
            if count:
                raise RuntimeError(f"bulk load broke {name}: {count} rows")
    with step("VACUUM ANALYZE"):
        conn.execute("VACUUM ANALYZE")
    info["tokens"] = total
    info["ranges"] = {k: list(v) for k, v in ranges.items()}
    return info


def prewarm(conn: psycopg.Connection) -> bool:
    """Read the hot tables and indexes into shared_buffers, when pg_prewarm is there."""
    try:
        conn.execute("CREATE EXTENSION IF NOT EXISTS pg_prewarm WITH SCHEMA bench")
    except psycopg.Error:
        return False
    conn.execute("""
        SELECT bench.pg_prewarm(c.oid)
        FROM pg_class AS c INNER JOIN pg_namespace AS n ON n.oid = c.relnamespace
        WHERE n.nspname IN ('auth', 'bench') AND c.relkind IN ('r', 'i')""")
    return True


def sanity_check(conn: psycopg.Connection, plan: Plan) -> None:
    """The loaded tokens answer as the benchmark expects, before anything is timed."""
    ranges = plan.ranges
    for kind in ("read", "hot"):
        first, last = ranges[kind]
        for i in (first, (first + last) // 2, last):
            with conn.transaction():
                row = conn.execute(
                    "SELECT is_valid, refresh_reason, message "
                    "FROM auth.validate_and_refresh_api_token(%s)",
                    (bench_token(conn, i),)).fetchone()
                if row[0] is not True or row[1] != "NO_REFRESH_NEEDED":
                    raise RuntimeError(f"{kind} token {i}: validate_and_refresh gave {row}")
                # The peer's table and the floor hold the read range only.
                fns = ["auth.validate_production_api_token"]
                if kind == "read":
                    fns += ["bench.validate_seed_shape", "bench.validate_floor"]
                for fn in fns:
                    ok = conn.execute(f"SELECT is_valid, message FROM {fn}(%s)",  # noqa: S608
                                      (bench_token(conn, i),)).fetchone()
                    if ok[0] is not True:
                        raise RuntimeError(f"{kind} token {i}: {fn} gave {ok}")
                raise psycopg.Rollback()
    first, last = ranges["rotate"]
    row = conn.execute("SELECT refresh_after <= now(), successor_hk IS NULL "
                       "FROM auth.api_token_bridge WHERE token_hash = "
                       "sha256(convert_to(%s, 'UTF8'))", (bench_token(conn, last),)).fetchone()
    if row != (True, True):
        raise RuntimeError(f"rotate token {last} is not due for refresh: {row}")



# --------------------------------------------------------------------------- pgbench


@dataclass
class Run:
    tps: float
    transactions: int
    latencies_us: list[int]
    writes: int | None = None
    bridge_updates: tuple[int, int] | None = None  # (all, HOT)
    wal: tuple[int, int, int] | None = None  # (records, full-page images, bytes), cluster-wide
    rotated: int | None = None
    cpu_s: tuple[float, float] | None = None  # (the backends', pgbench's) CPU seconds

    def percentile(self, q: float) -> float | None:
        if not self.latencies_us:
            return None
        lat = self.latencies_us
        return lat[min(len(lat) - 1, max(0, round(q * (len(lat) - 1))))] / 1000.0


def pgbench(url: str, script: str, clients: int, defines: dict[str, int], *,
            duration: float | None = None, transactions: int | None = None,
            sampling_rate: float = 1.0) -> Run:
    """One pgbench run of a custom script; latencies from the per-transaction log."""
    logdir = tempfile.mkdtemp(prefix="pyvault-bench-")
    try:
        prefix = os.path.join(logdir, "tx")
        cmd = [str(PGBENCH), "-n", "-f", str(SCRIPTS / script), "-c", str(clients),
               "-j", str(min(clients, 2)), "-M", "prepared", "--log", f"--log-prefix={prefix}"]
        if sampling_rate < 1.0:
            cmd.append(f"--sampling-rate={sampling_rate}")
        if duration is not None:
            cmd += ["-T", str(max(1, round(duration)))]
        else:
            cmd += ["-t", str(transactions)]
        for name, value in defines.items():
            cmd += ["-D", f"{name}={value}"]
        cmd.append(url)
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=logdir)
        if proc.returncode != 0:
            raise RuntimeError(f"pgbench {script} -c {clients} failed ({proc.returncode}):\n"
                               f"{proc.stderr[-2000:]}")
        tps = re.search(r"^tps = ([\d.]+) \(without initial connection time\)", proc.stdout, re.M)
        done = re.search(r"^number of transactions actually processed: (\d+)", proc.stdout, re.M)
        failed = re.search(r"^number of failed transactions: (\d+)", proc.stdout, re.M)
        if not tps or not done:
            raise RuntimeError(f"cannot parse pgbench output:\n{proc.stdout}")
        if failed and int(failed.group(1)):
            raise RuntimeError(f"pgbench {script}: {failed.group(1)} failed transactions")
        latencies = []
        for path in glob.glob(prefix + ".*"):
            with open(path, encoding="ascii") as fh:
                for line in fh:
                    parts = line.split()
                    if len(parts) >= 3:
                        latencies.append(int(parts[2]))
        latencies.sort()
        return Run(tps=float(tps.group(1)), transactions=int(done.group(1)),
                   latencies_us=latencies)
    finally:
        shutil.rmtree(logdir, ignore_errors=True)


class CpuMeter:
    """CPU seconds of the run's backends and of pgbench, whatever else the machine runs.

    Experimental, kept in results.json only: consistent in quick runs, but on the full
    data set some runs still get their backends' CPU attributed to the next run (0 for
    one row, double for the next), so the table does not show it yet.

    The postmaster reaps every backend that exits, so its children's CPU time
    (cutime + cstime in /proc/<postmaster>/stat) grows by the CPU of each pgbench
    connection once it is gone; pgbench's own is this process's children's. Wall-clock
    TPS moves with other work on the machine; CPU per call much less. Needs the server's
    data directory to be readable here (the embedded cluster; else None). An autovacuum
    worker that exits during a run is counted with the backends.
    """

    def __init__(self, conn: psycopg.Connection):
        self.stat = None
        try:
            data_dir = counter(conn, "SHOW data_directory")
            pid = int(Path(data_dir, "postmaster.pid").read_text().split()[0])
            self.stat = Path(f"/proc/{pid}/stat")
            self.stat.read_text()
            self.pid = pid
            self.own = conn.info.backend_pid
        except (psycopg.Error, OSError, ValueError, IndexError):
            self.stat = None
        self.tick = os.sysconf("SC_CLK_TCK")
        self.children = 0

    def _children(self) -> int:
        """The postmaster's client backends, ours aside (not its background processes
        nor autovacuum workers), and its children that exited but are not reaped yet."""
        n = 0
        for proc in glob.glob("/proc/[0-9]*"):
            try:
                state, ppid = Path(proc, "stat").read_text().rsplit(")", 1)[1].split()[:2]
                if int(ppid) != self.pid or int(os.path.basename(proc)) == self.own:
                    continue
                if state == "Z":  # exited, not reaped yet (and its title is gone)
                    n += 1
                    continue
                title = Path(proc, "cmdline").read_bytes().decode(errors="replace")
                if f" {DATABASE} " in title or "[local]" in title or "127.0.0.1(" in title:
                    n += "autovacuum" not in title
            except (OSError, ValueError, IndexError):
                pass
        return n

    def now(self) -> tuple[float, float] | None:
        if self.stat is None:
            return None
        fields = self.stat.read_text().rsplit(")", 1)[1].split()
        backends = (int(fields[13]) + int(fields[14])) / self.tick  # cutime, cstime
        own = resource.getrusage(resource.RUSAGE_CHILDREN)
        return backends, own.ru_utime + own.ru_stime

    def start(self) -> tuple[float, float] | None:
        """Before a run: the CPU so far, and how many children the postmaster has."""
        if self.stat is None:
            return None
        self.children = self._children()
        return self.now()

    def delta(self, before: tuple[float, float] | None) -> tuple[float, float] | None:
        if before is None:
            return None
        # A backend leaves pg_stat_activity before it exits, and counts here only once
        # the postmaster has reaped it: wait until it has as many children as before.
        deadline = time.monotonic() + 10
        while self._children() > self.children and time.monotonic() < deadline:
            time.sleep(0.02)
        after = self.now()
        if before is None or after is None:
            return None
        return after[0] - before[0], after[1] - before[1]


def counter(conn: psycopg.Connection, sql: str, *args) -> int:
    return conn.execute(sql, args).fetchone()[0]


def writes_now(conn: psycopg.Connection) -> tuple[int, ...]:
    """Rows written in auth and bench so far.

    A backend flushes its table counters before it leaves pg_stat_activity, so wait for
    pgbench's backends to be gone; our own pending counters are flushed on request.
    """
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and counter(
            conn, "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'pgbench'"):
        time.sleep(0.02)
    conn.execute("SELECT pg_stat_force_next_flush()")
    conn.execute("SELECT pg_stat_clear_snapshot()")
    wal = conn.execute("SELECT wal_records, wal_fpi, wal_bytes FROM pg_stat_wal").fetchone()
    return tuple(int(v) for v in conn.execute(WRITES).fetchone()) + tuple(int(v) for v in wal)


# --------------------------------------------------------------------------- profile

# Per statement, nested ones included (pg_stat_statements.track = all): a statement's time
# includes the statements it runs (a function call includes its body's statements).
PROFILE_TOP = """
SELECT toplevel, calls, total_exec_time, shared_blks_hit + shared_blks_read, wal_records,
       wal_fpi, wal_bytes, regexp_replace(query, '\\s+', ' ', 'g')
FROM bench.pg_stat_statements
WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
  AND query !~* '^(SELECT pg_stat_statements_reset|SELECT count\\(\\*\\) FROM pg_stat_activity)'
ORDER BY total_exec_time DESC
LIMIT 15
"""


class Profiler:
    """pg_stat_statements around one measured piece of work (--profile only)."""

    def __init__(self, conn: psycopg.Connection, enabled: bool):
        self.conn, self.enabled = conn, enabled
        if enabled:
            conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements WITH SCHEMA bench")

    def reset(self) -> None:
        if self.enabled:
            self.conn.execute("SELECT bench.pg_stat_statements_reset()")

    def take(self, per: int) -> list[dict] | None:
        """The top statements, with their cost per unit of work (per rotation, per token)."""
        if not self.enabled or per <= 0:
            return None
        return [{"toplevel": t, "calls_per_unit": calls / per, "us_per_call": ms * 1000 / calls,
                 "us_per_unit": ms * 1000 / per, "buffers_per_unit": blks / per,
                 "wal_records_per_unit": wr / per, "wal_fpi_per_unit": fpi / per,
                 "wal_bytes_per_unit": float(wb) / per, "query": q[:160]}
                for t, calls, ms, blks, wr, fpi, wb, q in self.conn.execute(PROFILE_TOP)
                if calls]


def render_profile(name: str, unit: str, statements: list[dict]) -> None:
    table = Table(title=f"where the time goes: {name} (pg_stat_statements, track = all; a "
                        "statement's time includes the statements it runs)",
                  title_justify="left")
    for col in ("calls/" + unit, "µs/call", "µs/" + unit, "buffers/" + unit,
                "WAL rec/" + unit, "FPI/" + unit, "WAL B/" + unit):
        table.add_column(col, justify="right")
    table.add_column("statement")
    for st in statements:
        table.add_row(f"{st['calls_per_unit']:.2f}", f"{st['us_per_call']:,.1f}",
                      f"{st['us_per_unit']:,.1f}", f"{st['buffers_per_unit']:.1f}",
                      f"{st['wal_records_per_unit']:.1f}", f"{st['wal_fpi_per_unit']:.2f}",
                      f"{st['wal_bytes_per_unit']:,.0f}",
                      ("" if st["toplevel"] else "  ") + st["query"][:110])
    out.print(table)


# --------------------------------------------------------------------------- batch


def run_batch(conn: psycopg.Connection, plan: Plan, *, job: bool) -> dict:
    """Refresh n_due of the due tokens, timed (wall).

    job=False: one call of auth.refresh_expiring_tokens_batch(p_max_tokens => n_due), one
    transaction that holds every row it took until it commits. job=True: CALL
    auth.refresh_expiring_tokens_job(), what pg_cron runs: one batch per transaction, a
    commit after each, until nothing is due (the rest of the due range, n_due tokens).
    """
    due_before = due_count(conn)
    last_event = counter(conn, "SELECT coalesce(max(event_id), 0) FROM auth.token_refresh_event")
    last_run = counter(conn, "SELECT coalesce(max(run_id), 0) FROM auth.token_refresh_batch_run")
    outbox_before = counter(conn, "SELECT count(*) FROM auth.token_refresh_outbox")
    t0 = time.perf_counter()
    if job:
        conn.execute("CALL auth.refresh_expiring_tokens_job()")
        details = None
    else:
        row = conn.execute(
            "SELECT tokens_found, tokens_refreshed, tokens_failed, details "
            "FROM auth.refresh_expiring_tokens_batch(p_max_tokens => %s)", (plan.n_due,)
        ).fetchone()
        details = json.dumps(row[3])[:300] if row[3] is not None else None
    wall = time.perf_counter() - t0
    runs = conn.execute(
        "SELECT count(*), coalesce(sum(tokens_found), 0), coalesce(sum(tokens_extended), 0), "
        "coalesce(sum(tokens_enqueued), 0), coalesce(sum(tokens_failed), 0) "
        "FROM auth.token_refresh_batch_run WHERE run_id > %s AND NOT skipped",
        (last_run,)).fetchone()
    events = dict(conn.execute(
        "SELECT outcome, count(*) FROM auth.token_refresh_event WHERE event_id > %s "
        "GROUP BY outcome", (last_event,)).fetchall())
    return {
        "how": "CALL auth.refresh_expiring_tokens_job()" if job else
               f"SELECT auth.refresh_expiring_tokens_batch(p_max_tokens => {plan.n_due})",
        "wall_s": wall, "transactions": runs[0], "due_before": due_before,
        "due_after": due_count(conn), "tokens_found": runs[1], "tokens_extended": runs[2],
        "tokens_enqueued": runs[3], "tokens_failed": runs[4], "events": events,
        "outbox_rows_added": counter(conn, "SELECT count(*) FROM auth.token_refresh_outbox")
        - outbox_before,
        "details_sample": details, "loaded_due_tokens": plan.n_due,
    }


# --------------------------------------------------------------------------- sizes


def sizes(conn: psycopg.Connection) -> dict:
    """Every table of the auth schema (whatever the migrations made), with its indexes."""
    tokens = counter(conn, "SELECT count(*) FROM auth.api_token_h")
    tables = {}
    for name, table, index, total in conn.execute(
            "SELECT c.relname, pg_table_size(c.oid), pg_indexes_size(c.oid), "
            "pg_total_relation_size(c.oid) FROM pg_class AS c "
            "WHERE c.relnamespace = 'auth'::regnamespace AND c.relkind IN ('r', 'p') "
            "ORDER BY c.relname").fetchall():
        tables[name] = {"table_bytes": table, "index_bytes": index, "total_bytes": total,
                        "mb_per_million_tokens": total * 1e6 / tokens / 2**20 if tokens else None}
    total = sum(t["total_bytes"] for t in tables.values())
    return {"tokens": tokens, "tables": tables, "total_bytes": total,
            "mb_per_million_tokens": total * 1e6 / tokens / 2**20 if tokens else None}


# --------------------------------------------------------------------------- main


@dataclass
class Result:
    row: Row
    clients: int
    runs: list[Run] = field(default_factory=list)

    def as_dict(self, limit: Result | None, driver: Result | None) -> dict:
        tps = [r.tps for r in self.runs]
        p50 = [p for r in self.runs if (p := r.percentile(0.50)) is not None]
        p99 = [p for r in self.runs if (p := r.percentile(0.99)) is not None]
        best = max(tps)
        # What a call costs beyond the driver (the token read and the round trip): the
        # machine time per call, 1/TPS, less the driver's, at the same client count.
        drv = max(r.tps for r in driver.runs) if driver else None
        lim = max(r.tps for r in limit.runs) if limit else None
        net = 1e6 / best - 1e6 / drv if drv else None
        net_limit = 1e6 / lim - 1e6 / drv if drv and lim else None
        d = {
            "id": self.row.id, "label": self.row.label, "clients": self.clients,
            "tps": best, "tps_min": min(tps), "tps_max": best, "tps_runs": tps,
            "p50_ms": min(p50) if p50 else None, "p99_ms": min(p99) if p99 else None,
            "ratio_to_limit": best / lim if lim else None,
            # Each repetition's ratio (the rows of one repetition run minutes apart at most):
            # steadier than best over best when other work comes and goes.
            "ratio_to_limit_per_rep": [r.tps / lr.tps for r, lr in
                                       zip(self.runs, limit.runs, strict=False)]
            if limit else None,
            "net_us_over_driver": net,
            "net_cost_x_limit": net / net_limit if net is not None and net_limit
            and net_limit > 0 and self.row.id != DRIVER_ID else None,
            "transactions": [r.transactions for r in self.runs],
            "latency_samples": [len(r.latencies_us) for r in self.runs],
        }
        writes = [r.writes for r in self.runs if r.writes is not None]
        if writes:
            d["rows_written_per_1k_calls"] = max(
                w * 1000 / r.transactions for w, r in zip(writes, self.runs, strict=False))
        timed = [r for r in self.runs if r.cpu_s]
        if timed:
            # the run with the least backend CPU per call, and every run's
            d["backend_cpu_us_per_call"] = min(r.cpu_s[0] * 1e6 / r.transactions for r in timed)
            d["pgbench_cpu_us_per_call"] = min(r.cpu_s[1] * 1e6 / r.transactions for r in timed)
            d["backend_cpu_us_per_call_runs"] = [r.cpu_s[0] * 1e6 / r.transactions
                                                 for r in timed]
        walled = [r for r in self.runs if r.wal and r.writes]
        if walled:
            def per_call(r: Run) -> dict:
                return {"records": r.wal[0] / r.transactions, "fpi": r.wal[1] / r.transactions,
                        "bytes": r.wal[2] / r.transactions}
            # that of the run with the most TPS (the figure reported), then every run's
            d["wal_per_call"] = per_call(max(walled, key=lambda r: r.tps))
            d["wal_per_call_runs"] = [per_call(r) for r in walled]
        upd = [r.bridge_updates for r in self.runs if r.bridge_updates]
        if upd and sum(u[0] for u in upd):
            d["bridge_updates"] = sum(u[0] for u in upd)
            d["bridge_hot_update_pct"] = 100.0 * sum(u[1] for u in upd) / d["bridge_updates"]
        rotated = [r.rotated for r in self.runs if r.rotated is not None]
        if rotated:
            d["rotated"] = rotated
        return d


def machine_info() -> dict:
    mem = None
    cpu = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem = int(line.split()[1]) * 1024
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "nproc": len(os.sched_getaffinity(0)), "cpu_count": os.cpu_count(), "cpu_model": cpu,
        "memory_bytes": mem, "memory_gib": round(mem / 2**30, 1) if mem else None,
        "platform": platform.platform(), "python": platform.python_version(),
        "loadavg_at_start": list(os.getloadavg()),
        "pgbench": subprocess.run([str(PGBENCH), "--version"], capture_output=True,
                                  text=True).stdout.strip(),
    }


def pg_info(conn: psycopg.Connection) -> dict:
    settings = dict(conn.execute(
        "SELECT name, current_setting(name) FROM pg_settings WHERE name IN "
        "('shared_buffers', 'fsync', 'synchronous_commit', 'full_page_writes', 'max_wal_size', "
        "'autovacuum', 'jit', 'work_mem')").fetchall())
    return {"server_version": counter(conn, "SHOW server_version"),
            "version": counter(conn, "SELECT version()"), "settings": settings}


def fmt(v: float | None, spec: str) -> str:
    return "–" if v is None else format(v, spec)


def targets(rows: list[dict], batch: dict, plan: Plan, fsync_off: bool) -> list[dict]:
    by = {(r["id"], r["clients"]): r for r in rows if r.get("tps")}
    res = []

    def add(name, value, ok, note=""):
        res.append({"target": name, "value": value, "status":
                    "n/a" if ok is None else ("PASS" if ok else "MISS"), "note": note})

    for c in plan.clients:
        r = by.get(("validate_and_refresh", c))
        v = r["ratio_to_limit"] if r else None
        add(f"validate_and_refresh (no refresh) >= 0.8x limit, {c} clients",
            fmt(v, ".2f") + "x", None if v is None else v >= 0.8)
    vr, peer = by.get(("validate_and_refresh", 8)), by.get(("peer_seed", 8))
    v = vr["tps"] / peer["tps"] if vr and peer else None
    add("validate_and_refresh >= 5x peer, 8 clients", fmt(v, ".1f") + "x",
        None if v is None else v >= 5,
        "fsync is off: the peer's commits skip the WAL flush" if fsync_off else "fsync on")
    for rid in ("rotate_validate_and_refresh", "rotate_refresh_enhanced"):
        best = max((by[(rid, c)]["tps"] for c in plan.clients if (rid, c) in by), default=None)
        add(f"{rid} >= 2,000 rotations/s, goal 4,000 (best of 2/8 clients)",
            fmt(best, ",.0f") + "/s", None if best is None else best >= 2000)
    for name, b in batch.items():
        scaled = b["wall_s"] * 100_000 / max(1, b["loaded_due_tokens"])
        note = "" if b["loaded_due_tokens"] == 100_000 else \
            f"scaled from {b['loaded_due_tokens']:,} due tokens"
        add(f"{name} over 100k due tokens < 10 s, goal 3 s", f"{scaled:.1f} s", scaled < 10,
            note)
    return res


def render(rows: list[dict], batch: dict, size: dict, tgts: list[dict], plan: Plan,
           meta: dict) -> None:
    settings = meta["postgres"]["settings"]
    title = (f"pyvault-tokens hot path: {size['tokens']:,} tokens, "
             f"{'quick, ' if plan.quick else ''}best of {plan.reps} x {plan.duration:g} s, "
             f"{meta['machine']['nproc']} cpu, PostgreSQL {meta['postgres']['server_version']}, "
             f"fsync {settings.get('fsync')}, synchronous_commit "
             f"{settings.get('synchronous_commit')}, pgbench over {meta['pgbench_connection']}, "
             f"load {meta['machine']['loadavg_at_start'][0]:.1f}")
    table = Table(title=title, title_justify="left")
    table.add_column("row", no_wrap=True)
    table.add_column("clients", justify="right")
    table.add_column("TPS", justify="right")
    table.add_column("spread (min–max)", justify="right")
    table.add_column("p50 ms", justify="right")
    table.add_column("p99 ms", justify="right")
    table.add_column("× LIMIT", justify="right")
    table.add_column("µs over driver", justify="right")
    table.add_column("note")
    prev = None
    for r in rows:
        if prev and prev != r["id"]:
            table.add_row()
        prev = r["id"]
        notes = []
        if "rows_written_per_1k_calls" in r:
            notes.append(f"{r['rows_written_per_1k_calls']:,.0f} rows written/1k")
        if "wal_per_call" in r:
            w = r["wal_per_call"]
            notes.append(f"WAL/call {w['bytes']:,.0f} B, {w['fpi']:.2f} FPI")
        if "bridge_updates" in r:
            notes.append(f"bridge upd {r['bridge_updates']:,}, "
                         f"{r['bridge_hot_update_pct']:.0f}% HOT")
        if "rotated" in r:
            notes.append(f"rotated {sum(r['rotated']):,}/{sum(r['transactions']):,}")
        table.add_row(
            r["label"], str(r["clients"]), fmt(r["tps"], ",.0f"),
            f"{r['tps_min']:,.0f}–{r['tps_max']:,.0f}", fmt(r["p50_ms"], ".3f"),
            fmt(r["p99_ms"], ".3f"), fmt(r["ratio_to_limit"], ".2f"),
            fmt(r["net_us_over_driver"], ",.1f") if r["id"] != DRIVER_ID else "0",
            "; ".join(notes))
    table.add_row()
    for name, b in batch.items():
        table.add_row(
            f"{name}: {b['how']}", "1",
            f"{b['tokens_found'] / b['wall_s']:,.0f}" if b["wall_s"] else "–",
            "", "", "", "", "",
            f"wall {b['wall_s']:.2f} s, {b['transactions']} transaction(s); found "
            f"{b['tokens_found']:,}: extended {b['tokens_extended']:,}, enqueued "
            f"{b['tokens_enqueued']:,}, failed {b['tokens_failed']:,}; {b['due_after']:,} "
            "still due")
    top = sorted(size["tables"].items(), key=lambda kv: -kv[1]["total_bytes"])[:4]
    table.add_row("size: auth tables + indexes per 1M tokens", "", "", "", "", "", "", "",
                  f"{size['mb_per_million_tokens']:,.0f} MB ("
                  + ", ".join(f"{k} {v['mb_per_million_tokens']:,.0f}" for k, v in top) + ")")
    out.print(table)
    out.print("Targets (reported, not asserted):")
    for t in tgts:
        colour = {"PASS": "green", "MISS": "red"}.get(t["status"], "yellow")
        note = f"  ({t['note']})" if t["note"] else ""
        out.print(f"  [{colour}]{t['status']:>4}[/]  {t['target']}: {t['value']}{note}")


def benchmark(url: str, bench_url: str, plan: Plan, cluster_info: dict) -> dict:
    """Load, then time every row with pgbench (connecting to bench_url), then the batch."""
    with psycopg.connect(url, autocommit=True) as conn:
        check_empty(conn)
        info = load(conn, url, plan)
        with step("prewarm"):
            info["prewarmed"] = prewarm(conn)
        conn.execute("CHECKPOINT")
        size = sizes(conn)
        with step("sanity check of the loaded tokens"):
            sanity_check(conn, plan)
        meta = {"machine": machine_info(), "postgres": pg_info(conn),
                "pgbench_connection": cluster_info["pgbench_connection"]}

        ranges = plan.ranges
        results: dict[tuple[str, int], Result] = {}
        warnings: list[str] = []
        profiler = Profiler(conn, plan.profile)
        cpu = CpuMeter(conn)
        profiles: dict[str, list[dict]] = {}
        rot_next = ranges["rotate"][0]
        read_rows = [r for r in READ_ROWS if not r.writes]
        write_rows = [r for r in READ_ROWS if r.writes]
        for rep in range(plan.reps):
            for clients in plan.clients:
                for row in read_rows + write_rows:
                    if row.kind == "hot":
                        conn.execute("UPDATE auth.api_token_bridge AS b "
                                     "SET record_use_after = '-infinity' FROM bench.hot_token "
                                     "AS h WHERE b.token_hash = h.token_hash")
                    first, last = ranges[row.kind]
                    before = writes_now(conn)
                    cpu0 = cpu.start()
                    log.print(f"  rep {rep + 1}/{plan.reps}  {clients} clients  {row.id} ...",
                              end="")
                    run = pgbench(bench_url, row.script, clients,
                                  {"first": first, "last": last},
                                  duration=plan.duration, sampling_rate=plan.sampling_rate)
                    after = writes_now(conn)
                    run.cpu_s = cpu.delta(cpu0)
                    run.writes = after[0] - before[0]
                    run.bridge_updates = (after[1] - before[1], after[2] - before[2])
                    run.wal = tuple(a - b for a, b in zip(after[3:], before[3:], strict=True))
                    log.print(f" {run.tps:,.0f} tps")
                    results.setdefault((row.id, clients), Result(row, clients)).runs.append(run)
                for row in ROTATION_ROWS:
                    per_client = plan.rotate_per_run // clients
                    last_event = counter(
                        conn, "SELECT coalesce(max(event_id), 0) FROM auth.token_refresh_event")
                    before = writes_now(conn)
                    cpu0 = cpu.start()
                    log.print(f"  rep {rep + 1}/{plan.reps}  {clients} clients  {row.id} ...",
                              end="")
                    profiler.reset()
                    run = pgbench(bench_url, row.script, clients,
                                  {"base": rot_next, "per_client": per_client, "n": 0},
                                  transactions=per_client)
                    after = writes_now(conn)
                    run.cpu_s = cpu.delta(cpu0)
                    if rep == 0 and (prof := profiler.take(run.transactions)):
                        profiles[f"{row.id}, {clients} clients"] = prof
                    run.writes = after[0] - before[0]
                    run.bridge_updates = (after[1] - before[1], after[2] - before[2])
                    run.wal = tuple(a - b for a, b in zip(after[3:], before[3:], strict=True))
                    rot_next += plan.rotate_per_run
                    run.rotated = counter(
                        conn, "SELECT count(*) FROM auth.token_refresh_event "
                        "WHERE event_id > %s AND outcome = 'ROTATED'", last_event)
                    log.print(f" {run.tps:,.0f} tps, {run.rotated} rotated")
                    if run.rotated != run.transactions:
                        warnings.append(f"{row.id} at {clients} clients: {run.rotated} of "
                                        f"{run.transactions} calls rotated a token")
                    results.setdefault((row.id, clients), Result(row, clients)).runs.append(run)
            # No CHECKPOINT between repetitions: after one, the first change of every page
            # writes its full image to the WAL, and a checkpoint every minute of writes
            # is not what a server that sustains them sees (checkpoint_timeout 5-30 min).
            # The first repetition follows the load's CHECKPOINT, so its write rows show
            # the cost right after one (the spread and wal_per_call_runs keep it).
            with step("settle: VACUUM"):
                conn.execute("VACUUM")

        batch = {}
        with step(f"batch: one call over {plan.n_due:,} of {due_count(conn):,} due tokens"):
            profiler.reset()
            batch["batch"] = run_batch(conn, plan, job=False)
            if prof := profiler.take(batch["batch"]["tokens_found"]):
                profiles["batch (one call)"] = prof
        with step(f"batch job: CALL auth.refresh_expiring_tokens_job() over the other "
                  f"{due_count(conn):,}"):
            profiler.reset()
            batch["batch_job"] = run_batch(conn, plan, job=True)
            if prof := profiler.take(batch["batch_job"]["tokens_found"]):
                profiles["batch job"] = prof

    order = [r.id for r in READ_ROWS + ROTATION_ROWS]
    rows = []
    for rid in order:
        for clients in plan.clients:
            res = results.get((rid, clients))
            if res:
                rows.append(res.as_dict(results.get((LIMIT_ID, clients)),
                                        results.get((DRIVER_ID, clients))))
    # Backend CPU per call as a multiple of the LIMIT probe's, at the same client count:
    # the ratio least moved by other work on the machine.
    lim_cpu = {r["clients"]: r.get("backend_cpu_us_per_call") for r in rows
               if r["id"] == LIMIT_ID}
    for r in rows:
        base = lim_cpu.get(r["clients"])
        mine = r.get("backend_cpu_us_per_call")
        r["backend_cpu_x_limit"] = mine / base if mine and base else None
    tgts = targets(rows, batch, plan, meta["postgres"]["settings"].get("fsync") == "off")
    render(rows, batch, size, tgts, plan, meta)
    for name, prof in profiles.items():
        render_profile(name, "token" if name.startswith("batch") else "rotation", prof)
    if plan.profile:
        out.print("[yellow]--profile:[/] pg_stat_statements tracks every nested statement, "
                  "which slows every row; compare TPS from a run without --profile.")
    for w in warnings:
        out.print(f"[yellow]warning:[/] {w}")
    return {
        "timestamp": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "mode": "quick" if plan.quick else "full",
        "fsync": meta["postgres"]["settings"].get("fsync") == "on",
        **meta,
        "cluster": cluster_info,
        "config": {
            "duration_s": plan.duration, "reps": plan.reps, "clients": list(plan.clients),
            "rotate_transactions_per_run": plan.rotate_per_run,
            "sampling_rate": plan.sampling_rate, "tenants": plan.tenants, "users": plan.users,
            "token_source": "bench.token (i bigint PRIMARY KEY, token text), read by i in "
                            "each measured statement; made at load time as 'ovt_prod_' || "
                            "encode(sha256(convert_to('bench' || i, 'UTF8')), 'hex')",
            "read_range_record_use_after": "infinity (the debounce never writes)",
            "hot_range_record_use_after": "-infinity, reset before every run",
        },
        "load": info,
        "rows": rows,
        "batch": batch,
        "sizes": size,
        "targets": tgts,
        "profiles": profiles,
        "warnings": warnings,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="~20,000 tokens, one short run per row (under a minute)")
    parser.add_argument("--database", metavar="URL",
                        help="a fresh database to load and benchmark (default: start an "
                             "embedded throwaway cluster)")
    parser.add_argument("--output", type=Path,
                        help="where to write the results (default: bench/results.json, "
                             "with --fsync bench/results-fsync.json)")
    parser.add_argument("--tokens", type=int, help="read-range tokens (default 1,000,000)")
    parser.add_argument("--duration", type=float, help="seconds per read run")
    parser.add_argument("--reps", type=int, help="runs per figure (best is reported)")
    parser.add_argument("--fsync", action="store_true",
                        help="fsync and synchronous_commit on, as production runs (default: "
                             "fsync off, as in the tests): every commit that writes waits "
                             "for its WAL flush. With --database, the server must have both on")
    parser.add_argument("--profile", action="store_true",
                        help="pg_stat_statements (track = all) around the rotation rows and "
                             "the batch: the cost of every statement they run, nested ones "
                             "included (slows every row)")
    args = parser.parse_args(argv)
    if args.output is None:
        args.output = BENCH_DIR / ("results-fsync.json" if args.fsync else "results.json")
    plan = Plan.make(args)
    if not PGBENCH.exists():
        sys.exit(f"error: pgbench not found at {PGBENCH}")

    started = time.perf_counter()
    pg = None
    try:
        if args.database:
            url = bench_url = args.database
            cluster_info = {"embedded": False, "pgbench_connection": "the --database URL"}
        else:
            from pyvault_tokens.embedded import start_cluster

            mem = machine_info()["memory_bytes"] or 0
            shared = "2GB" if mem >= 12 * 2**30 and not plan.quick else "256MB"
            extra = (f"-c shared_buffers={shared} -c max_wal_size=8GB "
                     "-c checkpoint_timeout=30min -c maintenance_work_mem=512MB")
            # start_cluster passes -F (fsync off); a later -c wins.
            extra += (" -c fsync=on -c synchronous_commit=on -c full_page_writes=on"
                      if args.fsync else " -c synchronous_commit=on")
            if args.profile:
                preload = ["pg_stat_statements"]
                if (PG_BIN.parent / "lib" / "pg_cron.so").exists():
                    preload.insert(0, "pg_cron")  # start_cluster's, which this replaces
                extra += (f" -c shared_preload_libraries={','.join(preload)} "
                          "-c pg_stat_statements.track=all -c pg_stat_statements.max=5000")
            with step(f"start embedded cluster ({extra})"):
                pg = start_cluster(extra_args=extra)
                with psycopg.connect(pg.url(database="postgres"), autocommit=True) as c:
                    c.execute(f"CREATE DATABASE {DATABASE}")
                url = pg.url(database=DATABASE)
            # pgbench through the Unix socket: TCP loopback costs every call more than
            # the probe the limit row measures.
            socket_dir = os.path.join(pg.base_dir, "tmp")
            bench_url = (f"host={socket_dir} port={pg.dsn()['port']} user=postgres "
                         f"dbname={DATABASE}")
            cluster_info = {"embedded": True, "postgres_args": "-F " + extra,
                            "pgbench_connection": "unix socket"}
        with psycopg.connect(url, autocommit=True) as c:
            fsync, sync = (counter(c, "SHOW fsync"), counter(c, "SHOW synchronous_commit"))
            profiling = c.execute(
                "SELECT count(*) FROM pg_settings WHERE name = 'pg_stat_statements.track' "
                "AND setting = 'all'").fetchone()[0]
        if args.profile and not profiling:
            sys.exit("error: --profile needs pg_stat_statements loaded with "
                     "pg_stat_statements.track = all")
        if args.fsync and (fsync, sync) != ("on", "on"):
            sys.exit(f"error: --fsync needs fsync and synchronous_commit on; the server has "
                     f"fsync={fsync}, synchronous_commit={sync}")
        with step("migrate"):
            migrate(url)
        result = benchmark(url, bench_url, plan, cluster_info)
    finally:
        if pg is not None:
            pg.stop()
    result["elapsed_s"] = round(time.perf_counter() - started, 1)
    # Other work on the machine moves every figure: say how loaded it was.
    result["machine"]["loadavg_at_end"] = list(os.getloadavg())
    log.print(f"load average at the start {result['machine']['loadavg_at_start']}, "
              f"at the end {result['machine']['loadavg_at_end']}")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2, default=str) + "\n", encoding="utf-8")
    log.print(f"wrote {args.output} ({result['elapsed_s']} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
