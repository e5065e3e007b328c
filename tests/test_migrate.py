"""Migrations: apply, re-apply, concurrent apply, rollback, a second database, the wheel."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import psycopg
import pytest

from pyvault_tokens.embedded import start_cluster
from pyvault_tokens.migrate import migrate, resource_dir, rollback, sql_files
from tests.harness import CLI

REPO = Path(__file__).resolve().parent.parent
ROLES = ("pyvault_api", "pyvault_admin", "pyvault_monitor", "pyvault_refresher")


def _cli(*args: str, env: dict | None = None, **kw) -> subprocess.CompletedProcess:
    full_env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    full_env.update(env or {})
    return subprocess.run([*CLI, *args], capture_output=True, text=True, env=full_env, **kw)


def _ours(url: str) -> dict[str, list[str]]:
    """Every object of ours that a database holds."""
    with psycopg.connect(url, autocommit=True) as conn:
        return {
            "schemas": [r[0] for r in conn.execute(
                "SELECT nspname FROM pg_namespace WHERE nspname IN ('auth', 'extensions')")],
            "extensions": [r[0] for r in conn.execute(
                "SELECT extname FROM pg_extension WHERE extname = 'pgcrypto'")],
            "roles": [r[0] for r in conn.execute(
                "SELECT rolname FROM pg_roles WHERE rolname = ANY(%s)", (list(ROLES),))],
        }


@pytest.fixture
def empty_db(cluster, request) -> str:
    return cluster.create_database(f"empty_{request.node.name[:30].lower()}")


def test_cli_migrates_an_empty_database_and_a_second_run_is_a_no_op(empty_db):
    first = _cli("migrate", "--database", empty_db)
    assert first.returncode == 0, first.stderr
    assert "applied migration 0001.schemas-and-roles" in first.stdout
    assert "applied migration 0004.batch-runs" in first.stdout
    assert "applied migration 0006.refresher-role" in first.stdout
    assert f"applied {len(sql_files())} SQL files" in first.stdout

    second = _cli("migrate", "--database", empty_db)
    assert second.returncode == 0, second.stderr
    assert "migrations: nothing to apply" in second.stdout
    assert "applied migration" not in second.stdout


def test_cli_falls_back_to_database_url_and_errors_clearly_without_one(empty_db):
    ok = _cli("migrate", env={"DATABASE_URL": empty_db})
    assert ok.returncode == 0, ok.stderr
    missing = _cli("migrate")
    assert missing.returncode == 2
    assert "no database given: pass --database URL or set DATABASE_URL" in missing.stderr


def test_cli_reports_an_unreachable_database_without_a_traceback():
    result = _cli("migrate", "--database", "postgresql://postgres@127.0.0.1:1/nothing")
    assert result.returncode == 3  # the database is unavailable
    assert "the database is unavailable" in result.stderr
    assert "Traceback" not in result.stderr


def test_two_concurrent_migrations_both_succeed(empty_db):
    errors: list[BaseException] = []
    barrier = threading.Barrier(2)

    def run():
        try:
            barrier.wait()
            migrate(empty_db)
        except BaseException as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    with psycopg.connect(empty_db) as conn:
        applied = conn.execute(
            "SELECT count(*) FROM pyvault_migrations._pyvault_tokens_migration").fetchone()[0]
    assert applied == len(list(resource_dir("migrations").glob("0*.sql"))) // 2


def test_rollback_leaves_nothing_behind_and_a_second_database_migrates_too():
    """On a cluster of its own, since roles are cluster-wide."""
    pg = start_cluster()
    try:
        with psycopg.connect(pg.url(database="postgres"), autocommit=True) as conn:
            conn.execute("CREATE DATABASE one")
            conn.execute("CREATE DATABASE two")
        one, two = pg.url(database="one"), pg.url(database="two")
        assert migrate(one).applied
        assert migrate(two).applied, "the second database of a cluster must migrate too"
        assert sorted(_ours(two)["roles"]) == sorted(ROLES)

        rollback(one)
        left = _ours(one)
        assert left["schemas"] == [] and left["extensions"] == []
        assert sorted(left["roles"]) == sorted(ROLES), "roles stay while database two uses them"

        rollback(two)
        assert _ours(two) == {"schemas": [], "extensions": [], "roles": []}
        assert migrate(two).applied, "a rolled-back database migrates again"
    finally:
        pg.stop()


def test_a_wheel_installed_outside_the_checkout_migrates(empty_db, tmp_path):
    dist = tmp_path / "dist"
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(dist), str(REPO)],
        capture_output=True, text=True,
    )
    assert build.returncode == 0, build.stderr
    wheel = next(dist.glob("pyvault_tokens-*.whl"))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    install = subprocess.run(
        [str(venv / "bin" / "pip"), "install", "-q", str(wheel), "psycopg[binary]"],
        capture_output=True, text=True,
    )
    assert install.returncode == 0, install.stderr
    result = subprocess.run(
        [str(venv / "bin" / "pyvault-tokens"), "migrate", "--database", empty_db],
        capture_output=True, text=True, cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert "applied migration 0003.refresh-tables" in result.stdout
    listing = subprocess.run(
        [str(venv / "bin" / "python"), "-c",
         "import pyvault_tokens.migrate as m; print(m.resource_dir('sql'))"],
        capture_output=True, text=True, cwd=tmp_path,
    )
    assert str(venv) in listing.stdout, "sql/ must come from the wheel, not the checkout"
