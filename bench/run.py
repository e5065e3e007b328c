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

Then, on a small cluster of its own on libfaketime's clock, the lifecycle row
(bench/lifecycle.py): 200 simulated days of daily use, and bytes per live token and
validate TPS on days 0, 100 and 200 (--lifecycle-clients 0 skips it).

Figures are best-of-N (TPS max, p50 and p99 min) with the min-max TPS spread; latency
percentiles come from pgbench's per-transaction logs. Speed is reported, never asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import psycopg

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench import lifecycle  # noqa: E402
from bench.common import BENCH_DIR, PGBENCH, counter, log, step  # noqa: E402
from bench.driver import Measurements, create_database, measure, server_args, sizes  # noqa: E402
from bench.loader import check_empty, load, prewarm, sanity_check  # noqa: E402
from bench.plan import Plan  # noqa: E402
from bench.report import machine_info, pg_info, report  # noqa: E402
from pyvault_tokens.migrate import migrate  # noqa: E402


def benchmark(url: str, bench_url: str, plan: Plan,
              cluster_info: dict) -> tuple[Measurements, dict, dict, dict]:
    """Load, then time every row with pgbench (connecting to bench_url), then the batch.

    Returns what was measured, the sizes after the load, the load's info and the meta."""
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
        return measure(conn, bench_url, plan), size, info, meta


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="~20,000 tokens, one short run per row, the lifecycle row at 800 "
                             "clients (about 90 s)")
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
    parser.add_argument("--lifecycle-clients", type=int, metavar="N",
                        help="clients of the lifecycle row, 200 simulated days on "
                             "libfaketime's clock (default 5,000, quick 800; 0 skips it)")
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
            extra = server_args(shared, fsync=args.fsync, profile=args.profile)
            with step(f"start embedded cluster ({extra})"):
                pg = start_cluster(extra_args=extra)
                url, bench_url = create_database(pg)
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
        measured, size, info, meta = benchmark(url, bench_url, plan, cluster_info)
    finally:
        if pg is not None:
            pg.stop()
    # On a cluster of its own, once the main one is stopped.
    cycle = lifecycle.run(plan, fsync=args.fsync) if plan.lifecycle_clients else None
    result = report(measured, size, info, plan, meta, cluster_info, cycle)
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
