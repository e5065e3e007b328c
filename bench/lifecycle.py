"""The lifecycle row (issue 12): storage and validation speed after 100 and 200 days.

A small cluster of its own runs on libfaketime's clock (start_cluster(clock_file=...)).
Every simulated day each client validates its token once, all in one statement, and
switches to the new token whenever one comes back; then the batch job and the lifecycle
pruning run, as pg_cron would run them, and every seventh day a plain VACUUM. The
tokens are issued over the last 23 days (p_expires_in 8 + i % 23 days), so their
refreshes are spread over the days. On days 0, 100 and 200: VACUUM, bytes per live
token (every auth table with its indexes over the live tokens), and pgbench of
auth.validate_and_refresh_api_token over the tokens the clients hold then (bench.token,
read by i, as the other rows read theirs).

The day loop (live_days) and the storage figure are written so that
tests/test_lifecycle.py, which checks the same 200 days, can use them too.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import psycopg

from bench.common import log, step
from bench.driver import CpuMeter, Result, create_database, server_args, sizes, timed_run
from bench.plan import LIFECYCLE_DAYS, Plan, Row
from bench.report import summarize
from pyvault_tokens.embedded import FAKETIME_LIB, EmbeddedPostgresql, start_cluster
from pyvault_tokens.migrate import migrate

# Every auth table with its indexes (and TOAST), and the tokens a client can still use.
STORAGE = """
SELECT sum(pg_total_relation_size(c.oid))::bigint
FROM pg_class AS c WHERE c.relnamespace = 'auth'::regnamespace AND c.relkind = 'r'
"""
LIVE = ("SELECT count(*) FROM auth.api_token_bridge"
        " WHERE successor_hk IS NULL AND NOT is_revoked AND valid_until > now()")
# One day of use: every client validates its token once, in one statement.
USE_ALL = """
SELECT t.i, v.is_valid, v.new_token, v.refresh_reason
FROM unnest(%s::text[]) WITH ORDINALITY AS t (token, i)
CROSS JOIN LATERAL auth.validate_and_refresh_api_token(t.token, 'api:read') AS v
ORDER BY t.i
"""
# Issued over the last 23 days, as a real population is: their refreshes are spread over
# the days, not one cohort that doubles the live set on one day.
ISSUE = """
SELECT g.token
FROM generate_series(0, %(clients)s - 1) AS s (i)
CROSS JOIN LATERAL auth.generate_production_api_token(
    %(user)s, %(tenant)s, p_expires_in => make_interval(days => 8 + s.i %% 23)) AS g
ORDER BY s.i
"""


# What results.json compares with day 0 (key: the day's figure).
RATIOS = (("storage", "bytes_per_live_token"), ("tps", "tps"),
          ("us_over_driver", "net_us_over_driver"),
          ("backend_cpu", "backend_cpu_us_per_call"),
          ("backend_cpu_over_driver", "backend_cpu_us_over_driver"))


@contextmanager
def clock_cluster(extra_args: str = "") -> Iterator[tuple[EmbeddedPostgresql, Path]]:
    """A throwaway cluster on libfaketime's clock, and the file that sets its offset."""
    folder = Path(tempfile.mkdtemp(prefix="pyvault-clock-", dir="/tmp"))  # noqa: S108
    os.chmod(folder, 0o755)  # noqa: S103 - the server user reads the clock file in it
    clock = folder / "offset"
    clock.write_text("+0d\n")
    os.chmod(clock, 0o644)
    try:
        pg = start_cluster(clock_file=clock, extra_args=extra_args)
        try:
            yield pg, clock
        finally:
            pg.stop()
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def issue_tokens(conn: psycopg.Connection, clients: int) -> list[str]:
    """One PRODUCTION token per client, for one user, in one statement."""
    tenant = conn.execute("SELECT auth.register_tenant('lifecycle')").fetchone()[0]
    user = conn.execute("SELECT auth.register_user(%s, 'daily')", (tenant,)).fetchone()[0]
    return [t for (t,) in conn.execute(ISSUE, {"clients": clients, "user": user,
                                               "tenant": tenant})]


def storage(conn: psycopg.Connection) -> tuple[int, int]:
    """Bytes of every auth table with its indexes, and the live tokens."""
    return conn.execute(STORAGE).fetchone()[0], conn.execute(LIVE).fetchone()[0]


@dataclass(frozen=True)
class Use:
    """One client's validation of one day."""

    i: int  # the client, from 1 (tokens[i - 1])
    token: str  # what it presented
    is_valid: bool
    new_token: str | None
    reason: str | None


def live_days(conn: psycopg.Connection, clock: Path, tokens: list[str],
              last_day: int) -> Iterator[tuple[int, list[Use]]]:
    """Day 0 to last_day of daily use; yields each day and its uses once the day is over.

    A day: the clock moves to +day days, every client validates its token once (one
    statement) and switches to the new token when one comes back (tokens is updated in
    place), then CALL auth.refresh_expiring_tokens_job() and CALL
    auth.prune_token_history(), and on every seventh day a plain VACUUM.
    """
    for day in range(last_day + 1):
        clock.write_text(f"+{day}d\n")
        uses = [Use(i, tokens[i - 1], ok, new_token, reason)
                for i, ok, new_token, reason in conn.execute(USE_ALL, (tokens,))]
        for use in uses:
            if use.new_token is not None:
                tokens[use.i - 1] = use.new_token
        conn.execute("CALL auth.refresh_expiring_tokens_job()")
        conn.execute("CALL auth.prune_token_history()")
        if day % 7 == 6:
            conn.execute("VACUUM")
        yield day, uses


def hold(conn: psycopg.Connection, tokens: list[str]) -> None:
    """The clients' tokens as bench.token, read by i (from 1) by the pgbench scripts."""
    conn.execute("TRUNCATE bench.token")
    with conn.cursor().copy("COPY bench.token (i, token) FROM STDIN") as copy:
        for i, token in enumerate(tokens, start=1):
            copy.write_row((i, token))
    conn.execute("ANALYZE bench.token")


# Run on each measured day, interleaved run by run: the driver (the round trip and the
# token read, with what libfaketime adds to every statement) and the call.
DAY_ROWS = (
    Row("lifecycle_driver", "driver: read a held token by id", "driver.sql", "lifecycle"),
    Row("lifecycle_validate_and_refresh", "validate_and_refresh over the held tokens",
        "validate_and_refresh.sql", "lifecycle"),
)


def measure_day(conn: psycopg.Connection, cpu: CpuMeter, bench_url: str, plan: Plan,
                day: int, tokens: list[str]) -> dict:
    """VACUUM, the storage per live token, and pgbench over the tokens held on this day."""
    conn.execute("VACUUM")
    size, live = storage(conn)
    tables = {name: t["total_bytes"] for name, t in sizes(conn)["tables"].items()}
    hold(conn, tokens)
    clients = plan.lifecycle_pgbench_clients
    results = {row.id: Result(row, clients) for row in DAY_ROWS}
    for rep in range(plan.reps):
        for row in DAY_ROWS:
            run = timed_run(conn, cpu, f"rep {rep + 1}/{plan.reps}  {clients} clients  day "
                            f"{day}  {row.id}", bench_url, row.script, clients,
                            {"first": 1, "last": len(tokens)},
                            duration=plan.lifecycle_duration, sampling_rate=plan.sampling_rate)
            log.print(f" {run.tps:,.0f} tps")
            results[row.id].runs.append(run)
    driver, call = (results[row.id] for row in DAY_ROWS)
    summary, base = summarize(call, None, driver), summarize(driver, None, None)
    cpu_call, cpu_base = (s.get("backend_cpu_us_per_call") for s in (summary, base))
    bridge = conn.execute("SELECT count(*) FROM auth.api_token_bridge").fetchone()[0]
    return {"day": day, "storage_bytes": size, "live_tokens": live,
            "bytes_per_live_token": size / live, "bridge_rows": bridge,
            "table_bytes": tables, **summary,
            "driver_tps": base["tps"], "driver_backend_cpu_us_per_call": cpu_base,
            "backend_cpu_us_over_driver": cpu_call - cpu_base if cpu_call and cpu_base
            else None}


def run(plan: Plan, *, fsync: bool) -> dict | None:
    """The lifecycle row on a cluster of its own; None when libfaketime is missing."""
    if not FAKETIME_LIB.exists():
        log.print(f"[yellow]lifecycle row skipped:[/] no libfaketime at {FAKETIME_LIB}")
        return None
    started = time.perf_counter()
    n, last_day = plan.lifecycle_clients, max(LIFECYCLE_DAYS)
    extra = server_args("256MB", fsync=fsync)
    days: list[dict] = []
    rotations = refused = 0
    with ExitStack() as stack:
        with step(f"lifecycle: start a cluster on libfaketime's clock ({extra}), migrate"):
            pg, clock = stack.enter_context(clock_cluster(extra))
            url, bench_url = create_database(pg)
            migrate(url)
        conn = stack.enter_context(psycopg.connect(url, autocommit=True))
        conn.execute("CREATE SCHEMA bench")
        conn.execute("CREATE TABLE bench.token (i bigint PRIMARY KEY, token text NOT NULL)")
        with step(f"lifecycle: issue {n:,} tokens"):
            tokens = issue_tokens(conn, n)
        cpu = CpuMeter(conn)
        since = time.perf_counter()
        for day, uses in live_days(conn, clock, tokens, last_day):
            rotations += sum(u.new_token is not None for u in uses)
            refused += sum(not u.is_valid for u in uses)
            if day in LIFECYCLE_DAYS:
                log.print(f"  lifecycle: {n:,} clients, up to day {day}: "
                          f"{time.perf_counter() - since:.1f} s")
                days.append({**measure_day(conn, cpu, bench_url, plan, day, tokens),
                             "rotations_so_far": rotations})
                since = time.perf_counter()
    first = days[0]

    def ratio(d: dict, key: str) -> float | None:
        return d[key] / first[key] if d.get(key) and first.get(key) else None

    return {
        "clients": n, "simulated_days": last_day, "measured_days": list(LIFECYCLE_DAYS),
        "pgbench_clients": plan.lifecycle_pgbench_clients,
        "duration_s": plan.lifecycle_duration, "reps": plan.reps, "rotations": rotations,
        "refused_uses": refused,
        "how": "every simulated day: one statement validates every client's token with "
               "auth.validate_and_refresh_api_token (the client switches to new_token), "
               "then CALL auth.refresh_expiring_tokens_job() and CALL "
               "auth.prune_token_history(), VACUUM every 7th day; on the measured days "
               "VACUUM, storage, then pgbench over the held tokens",
        "storage": "sum(pg_total_relation_size) of every auth table / live tokens "
                   "(the bridge's rows with no successor, not revoked, valid_until > now())",
        "postgres_args": "-F " + extra + " (libfaketime clock)",
        "days": days,
        "ratios": {f"{key}_day{d['day']}": ratio(d, field)
                   for d in days[1:]
                   for key, field in RATIOS},
        "elapsed_s": round(time.perf_counter() - started, 1),
    }
