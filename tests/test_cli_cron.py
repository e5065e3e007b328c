"""`schedule` and `unschedule` from another database refuse a fake pg_cron.

pg_cron lives in one database (cron.database_name). When the package lives elsewhere the
CLI connects there and calls cron.schedule_in_database / cron.unschedule. Where pg_cron is
not installed in that database, any login that may CREATE there can make a schema named
cron with look-alike functions that would run as the administrator. The CLI must check,
as auth._cron_schema() does in SQL, that the schema is the pg_cron extension's own
(pg_depend), and refuse in one line (exit 2) before it calls anything.

This needs a cluster of its own: the run's cluster has pg_cron installed in its cron
database, and cron.database_name can only be set when a server starts.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator

import psycopg
import pytest

from pyvault_tokens.embedded import start_cluster
from pyvault_tokens.migrate import migrate
from tests.harness import CLI

VICTIM = "cron_victim"  # cron.database_name, where pg_cron was never created

FAKE_CRON = """
CREATE SCHEMA cron;
CREATE TABLE cron.called (what text, at timestamptz DEFAULT now());
CREATE TABLE cron.job (jobid bigint, jobname text);
INSERT INTO cron.job VALUES (1, 'token-refresh-check'), (2, 'token-refresh-check-prune');
CREATE FUNCTION cron.schedule_in_database(text, text, text, text) RETURNS bigint
LANGUAGE sql AS $$ INSERT INTO cron.called (what) VALUES ('schedule_in_database: ' || $3)
                   RETURNING 42 $$;
CREATE FUNCTION cron.unschedule(bigint) RETURNS boolean
LANGUAGE sql AS $$ INSERT INTO cron.called (what) VALUES ('unschedule') RETURNING true $$;
"""


@pytest.fixture(scope="module")
def server() -> Iterator:
    pg = start_cluster(cron_database=VICTIM)
    try:
        yield pg
    finally:
        pg.stop()


@pytest.fixture(scope="module")
def app_url(server) -> str:
    with psycopg.connect(server.url(database="postgres"), autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {VICTIM}")
        admin.execute("CREATE DATABASE app")
        admin.execute("CREATE ROLE mallory LOGIN")
        admin.execute(f"GRANT CREATE ON DATABASE {VICTIM} TO mallory")
    # Another login plants the look-alike: it may CREATE in the cron database.
    mallory = psycopg.conninfo.make_conninfo(server.url(database=VICTIM), user="mallory")
    with psycopg.connect(mallory, autocommit=True) as conn:
        conn.execute(FAKE_CRON)
    url = server.url(database="app")
    migrate(url)
    return url


def run(url: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], capture_output=True, text=True,
                          env={**os.environ, "DATABASE_URL": url}, timeout=60)


def called(server) -> list[str]:
    with psycopg.connect(server.url(database=VICTIM), autocommit=True) as conn:
        return [r[0] for r in conn.execute("SELECT what FROM cron.called ORDER BY at")]


@pytest.mark.parametrize("command", ["schedule", "unschedule"])
def test_a_fake_cron_schema_is_refused_before_anything_runs(server, app_url, command):
    done = run(app_url, command)
    assert done.returncode == 2, (done.stdout, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert f"pg_cron is not installed in database {VICTIM}" in lines[0]
    assert "a schema named cron, but not pg_cron's" in lines[0]
    assert "Traceback" not in done.stderr
    assert called(server) == [], "the look-alike cron functions never ran"
    with psycopg.connect(server.url(database=VICTIM), autocommit=True) as conn:
        assert conn.execute("SELECT count(*) FROM cron.job").fetchone()[0] == 2


def test_without_any_cron_schema_it_says_pg_cron_is_missing(server, app_url):
    with psycopg.connect(server.url(database="postgres"), autocommit=True) as admin:
        admin.execute("CREATE DATABASE bare_app")
    url = server.url(database="bare_app")
    migrate(url)
    with psycopg.connect(server.url(database=VICTIM), autocommit=True) as conn:
        conn.execute("ALTER SCHEMA cron RENAME TO not_cron")
    try:
        done = run(url, "schedule")
    finally:
        with psycopg.connect(server.url(database=VICTIM), autocommit=True) as conn:
            conn.execute("ALTER SCHEMA not_cron RENAME TO cron")
    assert done.returncode == 2, done.stderr
    line = done.stderr.strip()
    assert line.startswith("Error: ") or "pg_cron is not installed" in line
    assert f"pg_cron is not installed in database {VICTIM} (cron.database_name); run" in line
    assert "CREATE EXTENSION pg_cron" in line
