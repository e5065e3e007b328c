"""Rules about the test suite itself: what counts as a pgTAP failure, and how test
modules share code (through helper modules under tests/, never through each other)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.pgtap import PgTapFailure, check_tap, run_tap

TESTS_DIR = Path(__file__).resolve().parent

TODO_SCRIPT = """
BEGIN;
SELECT plan(2);
SELECT ok(true, 'an assertion that passes');
SELECT todo('not finished yet', 1);
SELECT ok({second}, 'an assertion under a TODO');
SELECT * FROM finish();
ROLLBACK;
"""


# -- pgTAP: a TODO does not hide a failure -------------------------------------------------

def test_a_failing_todo_line_is_a_failure() -> None:
    with pytest.raises(PgTapFailure, match=r"not ok 2 - b # TODO later"):
        check_tap(["1..2", "ok 1 - a", "not ok 2 - b # TODO later",
                   "# Failed (TODO) test 2: \"b\""])


def test_passing_and_skipped_lines_pass() -> None:
    check_tap(["1..3", "ok 1 - a", "ok 2 - b # TODO later", "ok 3 - # SKIP not here"])


def test_a_failing_todo_assertion_fails_through_the_runner(cluster) -> None:
    url = cluster.fresh_database("tap_todo_rule")
    check_tap(run_tap(url, TODO_SCRIPT.format(second="true")))  # positive control
    lines = run_tap(url, TODO_SCRIPT.format(second="false"))
    assert "not ok 2 - an assertion under a TODO # TODO not finished yet" in lines, lines
    with pytest.raises(PgTapFailure, match="# TODO not finished yet"):
        check_tap(lines)


# -- test modules share code through helpers -------------------------------------------------

def _imported_modules(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: from . import test_x, from .test_x import y
                base = "tests" + ("." + node.module if node.module else "")
            else:
                base = node.module or ""
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def test_no_test_module_imports_another() -> None:
    modules = sorted(TESTS_DIR.glob("test_*.py"))
    assert len(modules) > 20, "positive control: the test modules were found"
    offences = []
    for path in modules:
        imported = set()
        for name in _imported_modules(path):
            parts = name.split(".")
            for i, part in enumerate(parts):
                if part.startswith("test_"):
                    imported.add(".".join(parts[:i + 1]))
                    break
        offences += [f"{path.name} imports {name}" for name in sorted(imported)]
    assert not offences, ("move what is shared into a helper module under tests/ "
                          "(tests/harness.py, tests/tokens.py, ...):\n" + "\n".join(offences))


def test_the_soak_profile_is_read_in_one_place() -> None:
    readers = sorted(
        p.name for p in TESTS_DIR.glob("*.py") if p.name != Path(__file__).name
        and any(isinstance(n, ast.Constant) and n.value == "PYVAULT_SOAK"
                for n in ast.walk(ast.parse(p.read_text(encoding="utf-8")))))
    assert readers == ["profile.py"], f"import SOAK or profile() from tests.profile: {readers}"
