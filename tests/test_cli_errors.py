"""Every failure a person can cause: one line on stderr, a documented exit code, no
traceback, no password. Real subprocesses against real databases: an unmigrated one, a
malformed URL, a port nobody listens on, a login without any pyvault role."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest
from click.testing import CliRunner

from pyvault_tokens import cli, errors
from pyvault_tokens.migrate import MigrateRefused
from tests.harness import CLI, login, password_login
from tests.servers import closed_port

PASSWORD = "pw-Zq7-never-shown"
TOKEN = "ovt_prod_" + "a" * 64

# command -> its arguments; {store} and {out} are filled per test.
COMMANDS = {
    "validate": ["validate", "-"],
    "status": ["status", "-"],
    "refresh": ["refresh", "-"],
    "diagnose": ["diagnose", "-"],
    "revoke": ["revoke", "-"],
    "issue": ["issue", "--user", "u", "--tenant", "t"],
    "refresh-batch": ["refresh-batch"],
    "prune": ["prune"],
    "alerts": ["alerts"],
    "metrics": ["metrics"],
    "schedule": ["schedule"],
    "unschedule": ["unschedule"],
    "migrate": ["migrate"],
    "dashboard": ["dashboard", "--out", "{out}"],
    "demo": ["demo"],  # takes --database only, no DATABASE_URL
    "refresher": ["refresher", "--store", "{store}", "--once"],
}
# failure -> (exit code, what stderr must say)
EXPECTED = {
    "unmigrated": (2, "run `pyvault-tokens migrate`"),
    "bad_url": (2, "not a PostgreSQL URL"),
    "refused": (3, "the database is unavailable"),
    "no_role": (2, "grant pyvault_"),
}
SKIP = {
    ("migrate", "unmigrated"): "migrate is the cure",
    ("demo", "unmigrated"): "the demo migrates first",
    ("refresher", "refused"): "the refresher retries while the database is down",
}
OWNER_COMMANDS = {"migrate", "demo"}  # they need the database owner, not a group role


def _with_login(url: str, user: str, password: str = PASSWORD) -> str:
    """The URL as a postgresql:// URL for another login, with a password in it."""
    params = psycopg.conninfo.conninfo_to_dict(url)
    return f"postgresql://{user}:{password}@{params['host']}:{params['port']}/{params['dbname']}"


@pytest.fixture(scope="module")
def urls(cluster, db_url) -> dict[str, str]:
    unmigrated = cluster.create_database("cli_errors_unmigrated")
    login(db_url, "cli_no_role")
    return {
        "unmigrated": _with_login(unmigrated, "postgres"),
        "bad_url": f"mysql://x:{PASSWORD}@host/db",
        "refused": f"postgresql://postgres:{PASSWORD}@127.0.0.1:{closed_port()}/nowhere",
        "no_role": _with_login(db_url, "cli_no_role"),
    }


def run(args: list[str], url: str | None = None, stdin: str | None = None,
        timeout: float = 60) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    if url is not None:
        env["DATABASE_URL"] = url
    return subprocess.run([*CLI, *args], input=stdin, capture_output=True, text=True, env=env,
                          timeout=timeout)


def assert_one_line(result: subprocess.CompletedProcess, code: int, *needles: str) -> str:
    shown = result.stdout + result.stderr
    lines = result.stderr.splitlines()
    assert result.returncode == code, shown
    assert len(lines) == 1, f"want one line on stderr, got: {result.stderr!r}"
    assert "Traceback" not in shown
    assert PASSWORD not in shown
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


# Every command against every failure, except the pairs in SKIP (no case: nothing is
# skipped in CI, so they are left out of the matrix, with the reason kept beside them).
CASES = [(c, f) for c in COMMANDS for f in EXPECTED if (c, f) not in SKIP]


@pytest.mark.parametrize(("command", "failure"), CASES)
def test_every_command_fails_in_one_line(command, failure, urls, tmp_path):
    store = tmp_path / "tokens.json"
    store.write_text(json.dumps({"version": 1, "tokens": {"t": {"token": TOKEN}}}))
    args = [a.format(store=store, out=tmp_path / "d.html") for a in COMMANDS[command]]
    url = urls[failure]
    if command == "demo":
        args += ["--database", url]
    result = run(args, url, stdin=TOKEN + "\n")
    code, needle = EXPECTED[failure]
    if failure == "no_role" and command in OWNER_COMMANDS:
        needle = "the database owner or a superuser"
    elif failure == "no_role" and command == "refresher":
        needle = "grant pyvault_refresher"

    if command == "alerts":
        # The Nagios convention: UNKNOWN (3), and the status on stdout's first line.
        line = assert_one_line(result, 3, needle)
        assert result.stdout.splitlines()[0].startswith("PYVAULT UNKNOWN - ")
        assert needle in result.stdout.splitlines()[0]
        assert line.removeprefix("Error: ") in result.stdout
        return
    if command == "refresher" and failure != "bad_url":
        # The service logs JSON lines; a setup error is one of them, and it stops at once.
        line = json.loads(assert_one_line(result, code))
        assert line["level"] == "error"
        assert needle in line["hint"] + line["detail"], line
        return
    assert_one_line(result, code, "Error: ", needle)
    if command == "metrics" and failure != "bad_url":
        assert "pyvault_tokens_up 0" in result.stdout, "the scrape itself still says down"


def test_a_login_with_a_wrong_password_is_refused_in_one_line(password_url):
    wrong = password_url.replace(f":{PASSWORD}@", ":wrong-Xy9@")
    result = run(["validate", "-"], wrong, stdin=TOKEN)
    line = assert_one_line(result, 2, "refused the login", "password")
    assert "wrong-Xy9" not in line


@pytest.fixture(scope="module")
def password_url(cluster, db_url) -> str:
    return password_login(cluster, db_url, "cli_pw", PASSWORD, "pyvault_api")


def test_a_correct_password_works(password_url):
    result = run(["validate", "-"], password_url, stdin=TOKEN)
    assert result.returncode == 1, result.stderr  # a valid check: the token is unknown
    assert "Token not found" in result.stdout or "is_valid" in result.stdout


def test_no_database_at_all_is_one_line():
    assert_one_line(run(["status", "-"], stdin=TOKEN), 2, "no database given")


def test_a_usage_error_is_one_line_pointing_at_help(db_url):
    line = assert_one_line(run(["issue", "--tenant", "t"], db_url), 2, "--user")
    assert "issue --help`" in line
    assert_one_line(run(["no-such-command"], db_url), 2, "no-such-command")
    assert_one_line(run(["store", "add"]), 2, "NAME")


def test_dashboard_into_a_missing_folder(db_url, tmp_path):
    missing = tmp_path / "no" / "such" / "dir" / "d.html"
    assert_one_line(run(["dashboard", "--out", str(missing)], db_url), 2,
                    "does not exist", "--out")
    assert not missing.parent.exists()


CORRUPT = '{"version": 1, "tokens": {"x": {"token": "ovt_prod_' + "b" * 64 + '"'  # cut off
STORE_COMMANDS = {
    "store add": (["store", "add", "x", "--store", "{store}"], TOKEN + "\n"),
    "store list": (["store", "list", "--store", "{store}"], None),
    "store remove": (["store", "remove", "x", "--store", "{store}"], None),
    "refresher": (["refresher", "--store", "{store}", "--once"], None),
}


@pytest.mark.parametrize("command", list(STORE_COMMANDS))
@pytest.mark.parametrize("trouble", ["corrupt", "unwritable"])
def test_store_troubles_are_one_line(command, trouble, db_url, tmp_path):
    if trouble == "corrupt":
        store = tmp_path / "tokens.json"
        store.write_text(CORRUPT)
        needle = "corrupt"
    else:
        # A path below a regular file: no one, not even root, can create it.
        (tmp_path / "a-file").write_text("")
        store = tmp_path / "a-file" / "tokens.json"
        needle = "cannot"
    args, stdin = STORE_COMMANDS[command]
    result = run([a.format(store=store) for a in args], db_url, stdin=stdin)
    line = assert_one_line(result, 2, str(store), needle)
    assert "b" * 64 not in result.stdout + result.stderr
    if command == "refresher":
        assert json.loads(line)["level"] == "error"


def test_migrate_refused_is_one_line_exit_2(monkeypatch):
    def refuse(url, role_prefix=None):
        raise MigrateRefused("migrate refused, nothing was changed: role x may create objects"
                             " in schema public (run: REVOKE CREATE ON SCHEMA public FROM x)")

    monkeypatch.setattr(cli, "run_migrate", refuse)
    result = CliRunner().invoke(cli.main, ["migrate", "--database", "postgresql://a@b/c"])
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [
        "Error: migrate refused, nothing was changed: role x may create objects in schema "
        "public (run: REVOKE CREATE ON SCHEMA public FROM x)"]


@pytest.mark.parametrize("url", [
    "mysql://x:secret@host/db", "postgresql://u:secret@h:5432/d?sslmode=require",
    "host=h user=u password=secret dbname=d", "host=h password='se cret' dbname=d",
    "postgresql://h/d?password=secret&sslmode=require",
])
def test_urls_are_masked(url):
    masked = errors.mask_url(f"cannot use {url} today")
    assert "secret" not in masked and "se cret" not in masked and "***" in masked
    assert masked.startswith("cannot use ") and masked.endswith(" today")


def test_errors_are_classified_by_sqlstate():
    cases = {"3F000": errors.NOT_MIGRATED, "42883": errors.NOT_MIGRATED,
             "42501": errors.PRIVILEGE, "28P01": errors.LOGIN, "3D000": errors.NO_DATABASE,
             "57P01": errors.DOWN, "57P03": errors.DOWN, "08006": errors.DOWN,
             "57014": errors.DOWN, "25006": errors.READ_ONLY, "22023": errors.OTHER}
    for sqlstate, kind in cases.items():
        exc = psycopg.errors.lookup(sqlstate)('function auth.x() does not exist')
        assert errors.classify(exc).kind == kind, sqlstate
    cron = psycopg.errors.InvalidSchemaName('schema "cron" does not exist')
    assert errors.classify(cron).kind == errors.OTHER, "pg_cron's objects are not ours"


def test_the_exit_codes_are_in_the_help():
    result = run(["--help"])
    assert "1 a check failed" in result.stdout and "3 the database is unavailable" in " ".join(
        result.stdout.split())


def test_help_walk_every_option_and_argument_is_documented():
    import click

    missing = []

    def walk(command: click.Command, path: str) -> None:
        ctx = click.Context(command, info_name=path)
        text = command.get_help(ctx)
        for param in command.params:
            if isinstance(param, click.Option) and not param.help:
                missing.append(f"{path} {param.opts[0]}")
            if isinstance(param, click.Argument):
                # Click's convention: arguments are described in the command's text.
                body = text.split("\n", 1)[1]
                if param.human_readable_name not in body:
                    missing.append(f"{path} {param.human_readable_name}")
                if param.name == "token" and "- to read it from stdin" not in " ".join(
                        body.split()):
                    missing.append(f"{path} TOKEN does not say '-' reads stdin")
        if not command.help:
            missing.append(f"{path}: no help text")
        for name, sub in getattr(command, "commands", {}).items():
            walk(sub, f"{path} {name}")

    walk(cli.main, "pyvault-tokens")
    assert missing == []


def test_python_dash_m_runs_the_cli():
    result = subprocess.run([sys.executable, "-m", "pyvault_tokens", "--help"],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("Usage: pyvault-tokens ")
    version = subprocess.run([sys.executable, "-m", "pyvault_tokens", "--version"],
                             capture_output=True, text=True)
    assert version.returncode == 0 and "version" in version.stdout


def test_the_wheel_says_apache_2(tmp_path):
    root = Path(__file__).resolve().parent.parent
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q",
         "-w", str(tmp_path), str(root)], capture_output=True, text=True)
    assert build.returncode == 0, build.stderr
    import zipfile

    wheel = next(tmp_path.glob("pyvault_tokens-*.whl"))
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        meta = next(n for n in names if n.endswith(".dist-info/METADATA"))
        metadata = z.read(meta).decode()
    assert "License-Expression: Apache-2.0" in metadata
    assert "License-File: LICENSE" in metadata
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
