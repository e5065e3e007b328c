"""The Node client (clients/node): its own node:test suite, run against a fresh database.

Installs the npm dependencies from the lockfile (`npm ci`) when any is missing, then runs
`node --test` in clients/node with DATABASE_URL pointing at this module's database.
A machine without Node.js fails this test: the Node client is part of the package.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

NODE_DIR = Path(__file__).resolve().parent.parent / "clients" / "node"


def _require(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        pytest.fail(
            f"`{tool}` is not on PATH: the Node client tests need Node.js 20 or newer with npm "
            "(on Debian: apt-get install nodejs npm)",
            pytrace=False,
        )
    return path


def _run(args: list[str], env: dict[str, str], timeout: int) -> subprocess.CompletedProcess:
    return subprocess.run(
        args, cwd=NODE_DIR, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def _missing_packages() -> list[str]:
    """The lockfile's packages (dev ones included) that node_modules does not hold.

    Checked against package-lock.json rather than a few names, so that a checkout whose
    node_modules predates a new dependency (prom-client, say) is installed again.
    """
    lock = NODE_DIR / "package-lock.json"
    if not lock.exists():
        return ["(no package-lock.json)"]
    packages = json.loads(lock.read_text(encoding="utf-8")).get("packages", {})
    return [
        where
        for where, meta in packages.items()
        if where.startswith("node_modules/")
        and not meta.get("optional")
        and not (NODE_DIR / where / "package.json").is_file()
    ]


def _install(npm: str, env: dict[str, str]) -> None:
    if not _missing_packages():
        return
    if (NODE_DIR / "package-lock.json").exists():
        args = [npm, "ci", "--no-audit", "--no-fund"]
    else:
        args = [npm, "install", "--no-audit", "--no-fund"]
    proc = _run(args, env, timeout=600)
    if proc.returncode != 0:
        command = " ".join(args[1:])
        pytest.fail(f"npm {command} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")


def _summary(output: str) -> dict[str, int]:
    """The counts of the TAP reporter's closing lines: '# pass 26', '# fail 0', ..."""
    lines = re.findall(r"^# (tests|pass|fail|cancelled) (\d+)$", output, re.M)
    return {name: int(count) for name, count in lines}


def test_node_client_suite(db_url: str) -> None:
    node = _require("node")
    npm = _require("npm")
    version = _run([node, "--version"], dict(os.environ), timeout=30).stdout.strip()
    major = re.match(r"v(\d+)\.", version)
    if not major or int(major.group(1)) < 20:
        pytest.fail(f"the Node client needs Node.js 20 or newer, found {version!r}", pytrace=False)

    env = {**os.environ, "DATABASE_URL": db_url, "NO_COLOR": "1"}
    _install(npm, env)
    proc = _run([node, "--test", "--test-reporter=tap"], env, timeout=300)
    output = f"{proc.stdout}\n{proc.stderr}"
    counts = _summary(proc.stdout)
    ok = (
        proc.returncode == 0
        and counts.get("pass", 0) > 0
        and counts.get("fail") == 0
        and counts.get("cancelled") == 0
        and counts.get("tests") == counts.get("pass")
    )
    if not ok:
        print(output)
    assert proc.returncode == 0, f"node --test exited {proc.returncode}; output above"
    assert counts.get("fail") == 0 and counts.get("cancelled") == 0, f"failures: {counts}"
    assert counts.get("pass", 0) > 0, f"node --test ran no passing test: {counts}"
    assert counts.get("tests") == counts.get("pass"), f"not every test passed: {counts}"
