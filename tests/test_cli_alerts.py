"""`pyvault-tokens alerts` as a Nagios plugin, and `metrics` exit codes, as subprocesses."""

from __future__ import annotations

import os
import re
import subprocess

import psycopg
import pytest

from pyvault_tokens import api
from tests.harness import CLI
from tests.tokens import make_token

STATUS = re.compile(r"PYVAULT (OK|WARNING|CRITICAL|UNKNOWN) - \S.*")


@pytest.fixture
def fresh_url(cluster, request) -> str:
    """A database of its own: alerts look at the whole database."""
    return cluster.fresh_database(request.node.name)


def alerts(url: str) -> tuple[int, str, list[str]]:
    result = subprocess.run([*CLI, "alerts"], capture_output=True, text=True,
                            env={**os.environ, "DATABASE_URL": url})
    first = result.stdout.splitlines()[0]
    assert STATUS.fullmatch(first), first
    assert first == first.strip(), "no padding"
    return result.returncode, first, result.stderr.splitlines()


def test_ok(fresh_url):
    with psycopg.connect(fresh_url, autocommit=True) as conn:
        make_token(conn, "20 days")
        api.refresh_batch(conn)
    assert alerts(fresh_url) == (
        0, "PYVAULT OK - no open alerts | critical=0;;;0 warning=0;;;0", [])


def test_warning(fresh_url):
    with psycopg.connect(fresh_url, autocommit=True) as conn:
        make_token(conn, "20 days")  # the batch job has never run
    code, first, err = alerts(fresh_url)
    assert (code, err) == (1, [])
    assert first == "PYVAULT WARNING - 1 open alert: BATCH_JOB_STALE | critical=0;;;0 warning=1;;;0"


def test_critical(fresh_url):
    with psycopg.connect(fresh_url, autocommit=True) as conn:
        token = make_token(conn, "20 days")
        api.refresh_batch(conn)
        conn.execute(
            "INSERT INTO auth.token_refresh_event"
            " (api_token_hk, tenant_hk, refresh_trigger, outcome, reason)"
            " SELECT b.api_token_hk, b.tenant_hk, 'BATCH', 'FAILED', 'TEST_FAILURE'"
            " FROM auth.api_token_bridge AS b, generate_series(1, 5)"
            " WHERE b.token_hash = sha256(convert_to(%s, 'UTF8'))", (token,))
    code, first, err = alerts(fresh_url)
    assert (code, err) == (2, [])
    assert first.startswith("PYVAULT CRITICAL - 1 open alert: REFRESH_FAILURE_RATE | ")


def test_unknown_when_the_database_is_down():
    code, first, err = alerts("postgresql://postgres@127.0.0.1:1/none")
    assert code == 3 and first.startswith("PYVAULT UNKNOWN - the database is unavailable")
    assert len(err) == 1


def test_one_metrics_scrape_exits_3_when_the_database_is_down_and_0_when_up(db_url):
    down = subprocess.run([*CLI, "metrics", "--database", "postgresql://postgres@127.0.0.1:1/x"],
                          capture_output=True, text=True)
    assert down.returncode == 3 and "pyvault_tokens_up 0" in down.stdout
    assert len(down.stderr.splitlines()) == 1
    up = subprocess.run([*CLI, "metrics", "--database", db_url], capture_output=True, text=True)
    assert up.returncode == 0 and "pyvault_tokens_up 1" in up.stdout and up.stderr == ""
