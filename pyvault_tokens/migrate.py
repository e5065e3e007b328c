"""Apply the yoyo migrations (DDL) and then re-apply every file in sql/.

Migrations run once each; the files in sql/ (functions and views, all
``CREATE OR REPLACE``) are re-applied on every call, in one transaction, so the
database always runs the code that ships with this package. A session-level
advisory lock serializes concurrent callers on one database.

The database may be shared with logins that can create schemas, functions and
operators (DESIGN.md section 5). So every statement runs with a pinned search_path
(pg_catalog, then only schemas this migrator owns), and before anything is written a
preflight refuses a database where a schema the package uses is owned, or writable, by
anyone but the migrating role or a superuser.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from yoyo import get_backend, internalmigrations, read_migrations

from pyvault_tokens.db import scalar

# Arbitrary, fixed: "pyvault" in ASCII. Shared by every pyvault-tokens migrator.
MIGRATE_LOCK_KEY = 0x707976617531
MIGRATION_TABLE = "_pyvault_tokens_migration"
# yoyo's own tables live in a schema of their own that the migrator owns, so nothing
# yoyo names unqualified can resolve to another login's table (its default is the first
# schema on the login's path, often a writable public).
BOOKKEEPING_SCHEMA = "pyvault_migrations"
# pg_catalog first, then nothing anyone else can create in. pg_temp is the session's own.
PINNED_SEARCH_PATH = "SET search_path = pg_catalog, pg_temp"

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
    """yoyo needs the psycopg (3) driver named in the scheme, and our bookkeeping schema.

    yoyo's ``schema`` argument makes it run ``SET search_path TO`` that schema on its
    connection: pg_catalog is then searched first, and the schema is ours.
    """
    for prefix in ("postgresql://", "postgres://"):
        if database_url.startswith(prefix):
            database_url = "postgresql+psycopg://" + database_url[len(prefix):]
            break
    separator = "&" if "?" in database_url else "?"
    return f"{database_url}{separator}schema={BOOKKEEPING_SCHEMA}"


# One row per reason the database is unsafe to install into; none means go ahead.
# Trusted owners: the migrating role and superusers. Runs under PINNED_SEARCH_PATH.
_PREFLIGHT_SQL = """
WITH trusted AS (
    SELECT r.oid FROM pg_roles AS r WHERE r.rolsuper OR r.rolname = current_user
),
pgcrypto AS (
    SELECT e.extnamespace, e.extowner FROM pg_extension AS e WHERE e.extname = 'pgcrypto'
),
used AS (
    SELECT n.oid, n.nspname, n.nspowner, n.nspacl
    FROM pg_namespace AS n
    WHERE n.nspname IN ('auth', 'extensions', %(bookkeeping)s)
       OR n.oid IN (SELECT p.extnamespace FROM pgcrypto AS p)
)
SELECT format('pgcrypto is installed in schema %%I; pyvault-tokens expects schema extensions '
              '(run: ALTER EXTENSION pgcrypto SET SCHEMA extensions)', n.nspname) AS problem
FROM pgcrypto AS p INNER JOIN pg_namespace AS n ON n.oid = p.extnamespace
WHERE n.nspname <> 'extensions'
UNION ALL
SELECT format('pgcrypto is owned by role %%I, not by the migrating role or a superuser '
              '(drop the extension, or ALTER EXTENSION pgcrypto OWNER TO %%I)',
              p.extowner::regrole, current_user)
FROM pgcrypto AS p WHERE p.extowner NOT IN (SELECT t.oid FROM trusted AS t)
UNION ALL
SELECT format('schema %%I is owned by role %%I, not by the migrating role or a superuser: '
              'its owner could replace what pyvault-tokens calls there (drop it, or '
              'ALTER SCHEMA %%I OWNER TO %%I)', u.nspname, u.nspowner::regrole,
              u.nspname, current_user)
FROM used AS u WHERE u.nspowner NOT IN (SELECT t.oid FROM trusted AS t)
UNION ALL
SELECT format('role %%s may create objects in schema %%I '
              '(run: REVOKE CREATE ON SCHEMA %%I FROM %%s)',
              CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(a.grantee::regrole::text) END,
              u.nspname, u.nspname,
              CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(a.grantee::regrole::text) END)
FROM used AS u CROSS JOIN LATERAL aclexplode(u.nspacl) AS a
WHERE a.privilege_type = 'CREATE' AND a.grantee <> u.nspowner
  AND a.grantee NOT IN (SELECT t.oid FROM trusted AS t)
UNION ALL
SELECT format('table %%I.%%I (yoyo''s record of pyvault-tokens migrations) is owned by role %%I, '
              'not by the migrating role or a superuser (drop it, or migrate as its owner)',
              n.nspname, c.relname, c.relowner::regrole)
FROM pg_class AS c INNER JOIN pg_namespace AS n ON n.oid = c.relnamespace
WHERE c.relname = %(table)s AND c.relowner NOT IN (SELECT t.oid FROM trusted AS t)
"""


def _preflight(conn: psycopg.Connection) -> bool:
    """Refuse, writing nothing, a database whose schemas someone else could subvert.

    Then create the bookkeeping schema, and move the record of applied migrations into it
    from where yoyo kept it before (the login's first schema, usually public). Returns
    whether it moved it: yoyo's version and log tables, shared with any other yoyo user of
    that schema, stay there and are made anew beside it (``_complete_bookkeeping``).
    """
    params = {"bookkeeping": BOOKKEEPING_SCHEMA, "table": MIGRATION_TABLE}
    with conn.transaction():
        # Created first and checked after, in one transaction: no window in which another
        # login's schema of that name could be accepted. A refusal rolls it back.
        conn.execute(f"CREATE SCHEMA IF NOT EXISTS {BOOKKEEPING_SCHEMA}")
        problems = [row[0] for row in conn.execute(_PREFLIGHT_SQL, params)]
        if problems:
            more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
            raise MigrateRefused(f"migrate refused, nothing was changed: {problems[0]}{more}")
        old = conn.execute(
            "SELECT c.oid::regclass::text FROM pg_class AS c"
            " WHERE c.relname = %(table)s AND c.relkind = 'r'"
            " AND c.relnamespace <> %(bookkeeping)s::regnamespace",
            params).fetchall()
        taken = scalar(
            conn, "SELECT to_regclass(format('%%I.%%I', %(bookkeeping)s::text, %(table)s::text))",
            params)
        if len(old) == 1 and taken is None:
            conn.execute(f"ALTER TABLE {old[0][0]} SET SCHEMA {BOOKKEEPING_SCHEMA}")
            return True
    return False


def _complete_bookkeeping(backend: Any) -> None:
    """After a move: yoyo's version table (its schema is v2) and log table, with yoyo's DDL."""
    tables = set(backend.list_tables())
    with backend.transaction():
        if backend.log_table not in tables:
            internalmigrations.v2.create_log_table(backend)
        if backend.version_table not in tables:
            internalmigrations.v2.create_version_table(backend)
            internalmigrations.mark_schema_version(backend, 2)


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
def _yoyo(database_url: str) -> Iterator[tuple[psycopg.Connection, Any, Any]]:
    """Our advisory lock, then yoyo's backend (under its own lock) and our migrations."""
    with psycopg.connect(database_url, autocommit=True) as lock_conn:
        lock_conn.execute(PINNED_SEARCH_PATH)
        lock_conn.execute("SELECT pg_catalog.pg_advisory_lock(%s)", (MIGRATE_LOCK_KEY,))
        moved = _preflight(lock_conn)
        backend = get_backend(yoyo_url(database_url), migration_table=MIGRATION_TABLE)
        try:
            if moved:
                _complete_bookkeeping(backend)
            with backend.lock():
                yield lock_conn, backend, read_migrations(str(resource_dir("migrations")))
        finally:
            backend.connection.close()


DEFAULT_ROLE_PREFIX = "pyvault"
ROLE_KINDS = ("api", "admin", "monitor", "refresher")
_ROLE_PREFIX = re.compile(r"[a-z][a-z0-9_]{0,39}")


def _check_role_prefix(wanted: str | None) -> None:
    if wanted is not None and not _ROLE_PREFIX.fullmatch(wanted):
        raise MigrateRefused(f"migrate refused, nothing was changed: role prefix {wanted!r}"
                             " must be a lower-case letter, then up to 39 letters, digits or _")


def _settle_role_prefix(conn: psycopg.Connection, wanted: str | None) -> str:
    """The install's role prefix: the stored one, or the one asked for (only in place of
    the default, whose grants auth._apply_role_prefix then moves). Creates its roles."""
    _check_role_prefix(wanted)
    stored: str = scalar(conn, "SELECT s.role_prefix FROM auth.install_settings AS s")
    if wanted is None or wanted == stored:
        prefix = stored
    elif stored == DEFAULT_ROLE_PREFIX:
        conn.execute("UPDATE auth.install_settings SET role_prefix = %s", (wanted,))
        prefix = wanted
    else:
        raise MigrateRefused(f"migrate refused, nothing was changed: this database was"
                             f" installed with role prefix {stored!r}; migrate it with"
                             f" --role-prefix {stored} (a prefix is changed only from the"
                             f" default)")
    for kind in ROLE_KINDS:
        role = f"{prefix}_{kind}"
        exists = conn.execute("SELECT FROM pg_roles WHERE rolname = %s", (role,)).fetchone()
        if exists is None:
            try:
                with conn.transaction():
                    conn.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(sql.Identifier(role)))
            except (psycopg.errors.DuplicateObject, psycopg.errors.UniqueViolation):
                pass  # created by a concurrent migration of another database
    return prefix


def apply_sql(conn: psycopg.Connection, role_prefix: str | None = None) -> list[str]:
    """Re-apply every file in sql/ in one transaction, then move the grants to the
    install's group roles (a no-op with the default prefix)."""
    root = resource_dir("sql")
    applied = []
    with conn.transaction():
        conn.execute("SELECT pg_catalog.pg_advisory_xact_lock(%s)", (MIGRATE_LOCK_KEY + 1,))
        _settle_role_prefix(conn, role_prefix)
        for path in sql_files():
            conn.execute(path.read_text(encoding="utf-8"))
            applied.append(str(path.relative_to(root)))
        conn.execute("SELECT auth._apply_role_prefix()")
    return applied


def migrate(database_url: str, role_prefix: str | None = None) -> MigrateResult:
    """Bring a database up to date. Safe to run twice, or from two processes at once.

    role_prefix names the group roles that get this database's grants (<prefix>_api,
    _admin, _monitor, _refresher; default pyvault, shared by every database of the
    cluster that keeps it). It is stored, and can be set only in place of the default.
    """
    _check_role_prefix(role_prefix)
    result = MigrateResult()
    with _yoyo(database_url) as (lock_conn, backend, migrations):
        pending = backend.to_apply(migrations)
        backend.apply_migrations(pending)
        result.applied = [m.id for m in pending]
        result.sql_files = apply_sql(lock_conn, role_prefix)
    return result


def rollback(database_url: str) -> MigrateResult:
    """Roll back every pyvault-tokens migration, removing all of its objects."""
    result = MigrateResult()
    with _yoyo(database_url) as (_, backend, migrations):
        applied = backend.to_rollback(migrations)
        backend.rollback_migrations(applied)
        result.rolled_back = [m.id for m in applied]
    return result
