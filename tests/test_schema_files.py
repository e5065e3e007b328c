"""The schema is what the files say, one object per file (issue 14).

- Every function and procedure of schema auth has its own file sql/auth/<name>.sql, and
  every view its own sql/monitoring/NN_<name>.sql; no file defines anything else.
- No file in sql/ drops a function: sql/ is re-applied on every migrate, so a changed
  signature is dropped once, by a migration.
- migrations plus sql/ build exactly tests/expected-schema.txt (regenerate it with
  `make schema-dump` after a deliberate change).
"""

from __future__ import annotations

import difflib
import re

import psycopg

from pyvault_tokens.migrate import resource_dir
from tests.schema_dump import EXPECTED, dump_schema

SQL = resource_dir("sql")
CREATES = re.compile(r"^CREATE OR REPLACE (FUNCTION|PROCEDURE|VIEW) auth\.([a-z_0-9]+)", re.M)


def test_every_function_and_view_has_a_file_of_its_own(db_url):
    with psycopg.connect(db_url) as c:
        routines = {r[0] for r in c.execute(
            "SELECT proname FROM pg_proc WHERE pronamespace = 'auth'::regnamespace")}
        views = {r[0] for r in c.execute(
            "SELECT viewname FROM pg_views WHERE schemaname = 'auth'")}
    files = {p.stem for p in (SQL / "auth").glob("*.sql")}
    view_files = {re.sub(r"^\d+_", "", p.stem) for p in (SQL / "monitoring").glob("*.sql")}
    assert routines == files, {"without a file": routines - files, "no object": files - routines}
    assert views == view_files, {"without a file": views - view_files,
                                 "no view": view_files - views}
    for path in SQL.rglob("*.sql"):
        names = {name for _, name in CREATES.findall(path.read_text())}
        assert names == {re.sub(r"^\d+_", "", path.stem)}, f"{path.name} defines {names}"


def test_no_file_in_sql_drops_a_function():
    for path in SQL.rglob("*.sql"):
        assert "DROP FUNCTION" not in path.read_text().upper(), path.name


def test_migrations_and_sql_build_exactly_the_expected_schema(db_url):
    actual = dump_schema(db_url)
    expected = EXPECTED.read_text(encoding="utf-8")
    if actual != expected:
        diff = "".join(list(difflib.unified_diff(
            expected.splitlines(keepends=True), actual.splitlines(keepends=True),
            "tests/expected-schema.txt", "migrated database"))[:80])
        raise AssertionError("the schema differs from tests/expected-schema.txt; if the change"
                             " is deliberate, run `make schema-dump` and review its diff:\n"
                             + diff)
