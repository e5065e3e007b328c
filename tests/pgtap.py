"""Run a pgTAP file as one pytest item, in its own database copied from the template.

The file is sent in one ``execute`` on an autocommit connection; each result set is
walked with ``nextset()`` and its TAP lines are parsed. A failure lists every failing
assertion with pgTAP's diagnostics; an SQL error fails with the error itself.
"""

from __future__ import annotations

import re

import psycopg
import pytest

from tests.harness import get_cluster

_PLAN = re.compile(r"^1\.\.(\d+)$")
_RESULT = re.compile(r"^(not ok|ok) (\d+)(?: - (.*))?$")


class PgTapFailure(Exception):
    pass


def run_tap(url: str, sql: str) -> list[str]:
    """Send a pgTAP script in one ``execute`` and return every TAP line it printed."""
    lines: list[str] = []
    with psycopg.connect(url, autocommit=True) as conn:
        cur = conn.cursor()
        try:
            cur.execute(sql)
        except psycopg.Error as exc:
            raise PgTapFailure(f"SQL error: {exc}\n" + "\n".join(lines)) from None
        while True:
            if cur.description is not None:
                for row in cur.fetchall():
                    for value in row:
                        if isinstance(value, str):
                            lines.extend(value.splitlines())
            if not cur.nextset():
                break
    return lines


def check_tap(lines: list[str]) -> None:
    """Raise PgTapFailure unless every assertion passed and the plan was kept.

    Every ``not ok`` is a failure, ``# TODO`` or not. TAP lets a harness count a failing
    TODO as expected, but here nothing reviews a list of expected failures: a TODO would
    turn a regression in the SQL into a silent pass. Mark unfinished work with ``skip()``
    (which never runs the assertion) or leave the test out.
    """
    planned = None
    ran = 0
    failures: list[list[str]] = []
    current: list[str] | None = None
    for line in lines:
        if m := _PLAN.match(line):
            planned = int(m.group(1))
            continue
        if m := _RESULT.match(line):
            ran += 1
            current = None
            if m.group(1) == "not ok":
                current = [line]
                failures.append(current)
            continue
        if line.startswith("#") and current is not None:
            current.append(line)
    problems = ["\n".join(f) for f in failures]
    if planned is None:
        problems.append("no plan was printed")
    elif planned != ran:
        problems.append(f"planned {planned} but ran {ran}")
    if problems:
        raise PgTapFailure("\n\n".join(problems))


class PgTapFile(pytest.File):
    def collect(self):
        yield PgTapItem.from_parent(self, name=self.path.stem)


class PgTapItem(pytest.Item):
    def runtest(self) -> None:
        url = get_cluster(self.config).fresh_database(f"tap_{self.name}")
        check_tap(run_tap(url, self.path.read_text(encoding="utf-8")))

    def repr_failure(self, excinfo, style=None):
        if isinstance(excinfo.value, PgTapFailure):
            return f"{self.path.name}:\n{excinfo.value}"
        return super().repr_failure(excinfo, style)

    def reportinfo(self):
        return self.path, 0, f"pgTAP {self.path.name}"
