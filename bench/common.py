"""What every part of the benchmark uses: paths, the two consoles, a timed step, and a
query that returns one value."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import psycopg
from rich.console import Console

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
PG_BIN = Path("/usr/lib/postgresql/15/bin")
PGBENCH = Path(os.environ.get("PGBENCH", PG_BIN / "pgbench"))
SCRIPTS = BENCH_DIR / "pgbench"
RECORD_SOURCE = "pyvault:bench"
DATABASE = "pyvault_bench"

out = Console(width=None if sys.stdout.isatty() else 250, highlight=False)
log = Console(stderr=True, highlight=False)


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


def counter(conn: psycopg.Connection, sql: str, *args) -> int:
    return conn.execute(sql, args).fetchone()[0]
