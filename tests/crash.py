"""For the crash tests: a cluster of a test's own, and the batch job run in a thread.

Shared by tests/test_batch.py and tests/test_reliability.py (test modules never import
each other: tests/test_test_suite_rules.py checks it).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

import psycopg

from pyvault_tokens.embedded import EmbeddedPostgresql, start_cluster
from tests.harness import prepare_database
from tests.polling import wait_for


@contextlib.contextmanager
def own_cluster(name: str) -> Iterator[tuple[EmbeddedPostgresql, str]]:
    """A cluster of the test's own (never the run's shared one, which a crash would take
    down), with a database ``name`` prepared as the template is; the cluster and its URL."""
    pg = start_cluster()
    try:
        with psycopg.connect(pg.url(database="postgres"), autocommit=True) as c:
            c.execute(f'CREATE DATABASE "{name}"')
        yield pg, prepare_database(pg.url(database=name))
    finally:
        pg.stop()


def batch_runs(conn: psycopg.Connection) -> int:
    """How many batch runs found work to do."""
    return conn.execute("SELECT count(*) FROM auth.token_refresh_batch_run"
                        " WHERE tokens_found > 0").fetchone()[0]


def start_batch_job(url: str, batch_size: int) -> tuple[psycopg.Connection, threading.Thread,
                                                         list[BaseException]]:
    """``CALL auth.refresh_expiring_tokens_job(batch_size)`` on a connection of its own, in
    a thread: the connection (to kill its backend), the thread, and the errors it raised."""
    job = psycopg.connect(url, autocommit=True)
    errors: list[BaseException] = []

    def run():
        try:
            job.execute(f"CALL auth.refresh_expiring_tokens_job({int(batch_size)})")
        except psycopg.Error as exc:
            errors.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    return job, thread, errors


def wait_for_batches(url: str, batches: int) -> None:
    """Until ``batches`` batch runs have found work (the job is under way)."""
    with psycopg.connect(url, autocommit=True) as watcher:
        wait_for(lambda: batch_runs(watcher) >= batches, timeout=60,
                 what="the job to get going", interval=0.02)
