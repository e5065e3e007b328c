"""Apply the yoyo migrations (DDL) and then re-apply every file in sql/.

Migrations run once each; the files in sql/ (functions and views, all
``CREATE OR REPLACE``) are re-applied on every call, in one transaction, so the
database always runs the code that ships with this package. A session-level
advisory lock serializes concurrent callers on one database.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
from yoyo import get_backend, read_migrations

# Arbitrary, fixed: "pyvault" in ASCII. Shared by every pyvault-tokens migrator.
MIGRATE_LOCK_KEY = 0x707976617531
MIGRATION_TABLE = "_pyvault_tokens_migration"

_PACKAGE_DIR = Path(__file__).resolve().parent


def resource_dir(name: str) -> Path:
    """Find migrations/ or sql/: inside the wheel, or at the top of a checkout."""
    for candidate in (_PACKAGE_DIR / name, _PACKAGE_DIR.parent / name):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"pyvault-tokens cannot find its {name}/ directory")


def sql_files() -> list[Path]:
    """Every function and view file, in the order they are applied."""
    return sorted(resource_dir("sql").rglob("*.sql"))


def yoyo_url(database_url: str) -> str:
    """yoyo needs the psycopg (3) driver named in the scheme."""
    for prefix in ("postgresql://", "postgres://"):
        if database_url.startswith(prefix):
            return "postgresql+psycopg://" + database_url[len(prefix):]
    return database_url


class MigrateRefused(Exception):
    """Migrate found the database unsafe to install into, and wrote nothing.

    ``str()`` is one line: what is wrong and what to do about it.
    """


@dataclass
class MigrateResult:
    applied: list[str] = field(default_factory=list)
    rolled_back: list[str] = field(default_factory=list)
    sql_files: list[str] = field(default_factory=list)


@contextmanager
def _yoyo(database_url: str) -> Iterator[tuple[psycopg.Connection, object, object]]:
    """Our advisory lock, then yoyo's backend (under its own lock) and our migrations."""
    with psycopg.connect(database_url, autocommit=True) as lock_conn:
        lock_conn.execute("SELECT pg_catalog.pg_advisory_lock(%s)", (MIGRATE_LOCK_KEY,))
        backend = get_backend(yoyo_url(database_url), migration_table=MIGRATION_TABLE)
        try:
            with backend.lock():
                yield lock_conn, backend, read_migrations(str(resource_dir("migrations")))
        finally:
            backend.connection.close()


def apply_sql(conn: psycopg.Connection) -> list[str]:
    """Re-apply every file in sql/ in one transaction."""
    root = resource_dir("sql")
    applied = []
    with conn.transaction():
        conn.execute("SELECT pg_catalog.pg_advisory_xact_lock(%s)", (MIGRATE_LOCK_KEY + 1,))
        for path in sql_files():
            conn.execute(path.read_text(encoding="utf-8"))
            applied.append(str(path.relative_to(root)))
    return applied


def migrate(database_url: str) -> MigrateResult:
    """Bring a database up to date. Safe to run twice, or from two processes at once."""
    result = MigrateResult()
    with _yoyo(database_url) as (lock_conn, backend, migrations):
        pending = backend.to_apply(migrations)
        backend.apply_migrations(pending)
        result.applied = [m.id for m in pending]
        result.sql_files = apply_sql(lock_conn)
    return result


def rollback(database_url: str) -> MigrateResult:
    """Roll back every pyvault-tokens migration, removing all of its objects."""
    result = MigrateResult()
    with _yoyo(database_url) as (_, backend, migrations):
        applied = backend.to_rollback(migrations)
        backend.rollback_migrations(applied)
        result.rolled_back = [m.id for m in applied]
    return result
