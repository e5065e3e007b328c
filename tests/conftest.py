"""Fixtures: the run's cluster, a fresh database per test module, connections."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from tests.harness import TESTS_DIR, Cluster, get_cluster, stop_cluster


@pytest.fixture(scope="session")
def cluster(request: pytest.FixtureRequest) -> Cluster:
    return get_cluster(request.config)


@pytest.fixture(scope="module")
def db_url(cluster: Cluster, request: pytest.FixtureRequest) -> str:
    """A fresh, migrated database for this test module."""
    return cluster.fresh_database(request.module.__name__.rsplit(".", 1)[-1])


@pytest.fixture
def conn(db_url: str) -> Iterator[psycopg.Connection]:
    with psycopg.connect(db_url, autocommit=True) as c:
        yield c


def pytest_sessionfinish(session: pytest.Session) -> None:
    stop_cluster(session.config)


def pytest_collect_file(parent: pytest.Collector, file_path: Path):
    if file_path.suffix == ".sql" and file_path.parent == TESTS_DIR / "sql":
        from tests.pgtap import PgTapFile

        return PgTapFile.from_parent(parent, path=file_path)
    return None
