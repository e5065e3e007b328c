"""The refresher service as a real subprocess, and the token store it writes.

The service logs in as a deployment's refresher does: a login role that is a member of
pyvault_refresher only (not of pyvault_api or pyvault_admin), so these tests also prove
that role's grants are enough for the service's work.
"""

from __future__ import annotations

import json
import os
import re
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest

from pyvault_tokens.store import TokenStore
from tests.harness import CLI, login, password_login
from tests.polling import wait_for
from tests.servers import refresher
from tests.tokens import make_token

SECRET = re.compile(r"[0-9a-f]{64}")
LOGS: list[str] = []  # every line the refresher printed in this module


@pytest.fixture(scope="module")
def refresher_url(db_url: str) -> str:
    """The database, as a login that is only a member of pyvault_refresher."""
    url = login(db_url, "refresher_test", "pyvault_refresher")
    with psycopg.connect(db_url, autocommit=True) as conn:
        groups = conn.execute(
            "SELECT array_agg(m.roleid::regrole::text ORDER BY 1) FROM pg_auth_members AS m"
            " WHERE m.member = 'refresher_test'::regrole").fetchone()[0]
    assert groups == ["pyvault_refresher"]
    return url


def _store(tmp_path: Path, name: str, token: str) -> Path:
    """A token store in tmp_path that holds one token under ``name``; its path."""
    path = tmp_path / "tokens.json"
    TokenStore(path).put(name, token)
    return path


def _valid(conn, token: str) -> bool:
    return conn.execute("SELECT is_valid FROM auth.validate_production_api_token(%s)",
                        (token,)).fetchone()[0]


# The refresher CLI in a process that dies (SIGKILL) at its first store write after a
# refresh, that is between the database commit and the store write: the fault is this
# test's own, patched in, not a hook in pyvault_tokens.refresher.
CRASH_AFTER_COMMIT = [sys.executable, "-c", """
import os, signal, sys
from pyvault_tokens import store
from pyvault_tokens.cli import main

def crash(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGKILL)

store.TokenStore.replace = store.TokenStore.update_expiry = crash
main(sys.argv[1:], prog_name="pyvault-tokens")
"""]


def _run_once(db_url: str, store: Path, env: dict | None = None, *,
              crash_after_commit: bool = False) -> subprocess.CompletedProcess:
    command = CRASH_AFTER_COMMIT if crash_after_commit else CLI
    result = subprocess.run([*command, "refresher", "--store", str(store), "--database", db_url,
                             "--once"], capture_output=True, text=True,
                            env={**os.environ, **(env or {})}, timeout=60)
    LOGS.extend((result.stdout + result.stderr).splitlines())
    return result


def test_store_cli_adds_from_stdin_lists_without_secrets_and_writes_0600(tmp_path, conn):
    token = make_token(conn, user="store-cli")
    path = tmp_path / "tokens.json"
    added = subprocess.run([*CLI, "store", "add", "billing", "--store", str(path)],
                           input=token + "\n", capture_output=True, text=True)
    assert added.returncode == 0, added.stderr
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert json.loads(path.read_text())["tokens"]["billing"]["token"] == token
    listed = subprocess.run([*CLI, "store", "list", "--store", str(path)],
                            capture_output=True, text=True)
    assert "billing" in listed.stdout and token[:13] in listed.stdout
    assert token not in listed.stdout + added.stdout and not SECRET.search(listed.stdout)
    bad = subprocess.run([*CLI, "store", "add", "x", "--store", str(path)], input="nope\n",
                         capture_output=True, text=True)
    assert bad.returncode == 2 and "does not hold an ovt_prod_ token" in bad.stderr


def test_store_compare_and_swap(tmp_path):
    store = TokenStore(tmp_path / "s.json")
    old, new, other = ("ovt_prod_" + c * 64 for c in "abc")
    store.put("svc", old)
    assert store.replace("svc", old, new) is True
    assert store.replace("svc", old, other) is False, "a stale writer must not win"
    assert store.get("svc").token == new
    assert "bbbbbbbbbbbb" not in repr(store.get("svc"))


def test_the_service_refreshes_what_is_due_and_wakes_on_the_outbox(tmp_path, conn,
                                                                   refresher_url):
    rotate = make_token(conn, "3 days", user="svc-rotate")
    extend = make_token(conn, "3 days", "API_KEY", user="svc-extend")
    idle = make_token(conn, "10 days", "API", user="svc-idle")
    path = tmp_path / "tokens.json"
    store = TokenStore(path)
    for name, token in (("rotate", rotate), ("extend", extend), ("idle", idle)):
        store.put(name, token)

    service = refresher("--store", str(path), "--database", refresher_url,
                        "--sweep-interval", "3600")
    try:
        wait_for(lambda: store.get("rotate").token != rotate, what="the ROTATE token")
        new = store.get("rotate").token
        assert _valid(conn, new), "the stored successor works"
        wait_for(lambda: store.get("extend").expires_at is not None, what="the EXTEND expiry")
        assert store.get("extend").token == extend, "EXTEND keeps the secret"
        assert store.get("idle").token == idle, "a token that is not due is left alone"

        # Make the idle token due, let the batch job enqueue it: the NOTIFY wakes the
        # service long before its hourly sweep.
        conn.execute("SELECT auth.set_refresh_policy('API', p_refresh_threshold => '11 days')")
        batch = conn.execute("SELECT details FROM auth.refresh_expiring_tokens_batch()"
                             ).fetchone()[0]
        assert batch["counts"]["enqueued"] >= 1
        wait_for(lambda: store.get("idle").token != idle, what="the enqueued token")
        assert _valid(conn, store.get("idle").token)
        pending = conn.execute(
            "SELECT o.processed_at IS NOT NULL, o.outcome FROM auth.token_refresh_outbox AS o"
            " WHERE o.api_token_hk = (tests.bridge(%s)).api_token_hk", (idle,)).fetchone()
        assert pending == (True, "PREDICTED_IDLE") or pending[0] is True
        triggers = conn.execute(
            "SELECT DISTINCT refresh_trigger FROM auth.token_refresh_event"
            " WHERE api_token_hk IN ((tests.bridge(%s)).api_token_hk,"
            " (tests.bridge(%s)).api_token_hk)", (rotate, idle)).fetchall()
        assert ("SERVICE",) in triggers
        held = conn.execute("SELECT h.tokens_held FROM auth.refresher_heartbeat AS h"
                            " WHERE h.instance LIKE %s", (f"%:{path.resolve()}",)).fetchone()
        assert held is not None and held[0] >= 1, "the sweep recorded its heartbeat"
    finally:
        code = service.stop()
        LOGS.extend(service.lines)
    assert code == 0, service.output
    events = [e["event"] for e in service.events()]
    assert "listening" in events and "token refreshed" in events and events[-1] == "stopped"
    conn.execute("SELECT auth.set_refresh_policy('API', p_refresh_threshold => '7 days')")


def test_a_crash_between_commit_and_store_write_is_recovered(tmp_path, conn, refresher_url):
    token = make_token(conn, "3 days", user="svc-crash")
    path = _store(tmp_path, "crashy", token)
    crashed = _run_once(refresher_url, path, crash_after_commit=True)
    assert crashed.returncode == -signal.SIGKILL
    assert TokenStore(path).get("crashy").token == token, "the store write never happened"
    successor = conn.execute("SELECT (tests.bridge(%s)).successor_hk", (token,)).fetchone()[0]
    assert successor is not None, "the database committed the rotation"
    assert _valid(conn, token), "the old token still works: its successor was never used"

    recovered = _run_once(refresher_url, path)
    assert recovered.returncode == 0, recovered.stderr
    new = TokenStore(path).get("crashy").token
    assert new != token and _valid(conn, new)
    assert conn.execute("SELECT (tests.bridge(%s)).api_token_hk", (new,)).fetchone()[0] == \
        successor, "the restart received the very successor the crashed run created"


def test_a_login_without_the_refresher_role_stops_with_a_clear_error(tmp_path, conn, db_url):
    token = make_token(conn, "3 days", user="svc-nobody")
    path = _store(tmp_path, "x", token)
    result = _run_once(login(db_url, "refresher_nobody"), path)
    assert result.returncode == 2, "a setup error is not retried"
    assert "Traceback" not in result.stderr
    [line] = [json.loads(x) for x in result.stderr.splitlines() if "not set up" in x]
    assert line["level"] == "error" and line["error"] == "InsufficientPrivilege"
    assert "pyvault_refresher" in line["hint"]
    assert TokenStore(path).get("x").token == token
    assert conn.execute("SELECT (tests.bridge(%s)).successor_hk IS NULL",
                        (token,)).fetchone()[0], "nothing was refreshed"


def test_an_api_login_from_before_the_refresher_role_still_refreshes(tmp_path, conn, db_url):
    # Before migration 0006 the refresher ran as an API login, which may refresh but no
    # longer report a heartbeat: an upgrade must not stop the refreshing.
    token = make_token(conn, "3 days", user="svc-legacy")
    path = _store(tmp_path, "legacy", token)
    result = _run_once(login(db_url, "refresher_legacy", "pyvault_api"), path)
    assert result.returncode == 0, result.stderr
    new = TokenStore(path).get("legacy").token
    assert new != token and _valid(conn, new), "the token was refreshed"
    [line] = [json.loads(x) for x in result.stderr.splitlines() if "heartbeat refused" in x]
    assert line["level"] == "error" and "pyvault_refresher" in line["hint"]


def test_database_errors_are_retried_not_fatal(tmp_path):
    path = _store(tmp_path, "x", "ovt_prod_" + "a" * 64)
    service = refresher("--store", str(path), "--database",
                        "postgresql://postgres@127.0.0.1:1/none")
    wait_for(lambda: sum("database unavailable" in line for line in service.lines) >= 2,
             timeout=30, what="two retries")
    assert service.proc.poll() is None, "the service must keep retrying"
    assert service.stop() == 0
    LOGS.extend(service.lines)
    retries = [json.loads(line) for line in service.lines if "database unavailable" in line]
    assert [r["retry_in"] for r in retries[:2]] == [1.0, 2.0], "backoff doubles"
    assert "Connection refused" in retries[0]["detail"], "the log says why"


@pytest.mark.parametrize("trouble", ["wrong password", "no such database"])
def test_a_refused_login_or_missing_database_stops_at_once(trouble, tmp_path, cluster, conn,
                                                           db_url):
    url = password_login(cluster, db_url, "refresher_pw", "right-Pw4", "pyvault_refresher")
    if trouble == "wrong password":
        url, sqlstate = url.replace(":right-Pw4@", ":wrong-Pw5@"), "28P01"
    else:
        url, sqlstate = url.rsplit("/", 1)[0] + "/no_such_database", "3D000"
    path = _store(tmp_path, "x", make_token(conn, "3 days", user="svc-refused"))
    started = time.monotonic()
    result = _run_once(url, path)
    assert result.returncode == 2, result.stderr
    assert time.monotonic() - started < 20, "no retries"
    [line] = [json.loads(x) for x in result.stderr.splitlines()]
    assert line["level"] == "error" and line["sqlstate"] == sqlstate
    assert "database" in line["hint"] or "password" in line["hint"], line
    assert "Pw4" not in result.stderr and "Pw5" not in result.stderr


def test_a_flood_of_notifications_costs_one_sweep_per_interval(tmp_path, conn, db_url,
                                                                refresher_url):
    """Any login may NOTIFY the channel (issue 11: 100 forged notifications caused 102
    sweeps in 6 s). With --min-sweep-interval 1 a 2-second flood costs about 2 sweeps,
    and every notification is still answered by a sweep."""
    path = _store(tmp_path, "calm", make_token(conn, "20 days", user="svc-flood"))
    service = refresher("--store", str(path), "--database", refresher_url,
                        "--sweep-interval", "3600", "--min-sweep-interval", "1")

    def sweeps() -> list[dict]:
        return [e for e in map(json.loads, list(service.lines)) if e["event"] == "sweep done"]

    try:
        wait_for(lambda: sweeps() and any('"listening"' in x for x in service.lines),
                 what="the first sweep and the listener")
        forger_url = login(db_url, "flood_nobody")
        with psycopg.connect(forger_url, autocommit=True) as forger:
            started = time.monotonic()
            for _ in range(100):
                forger.execute("NOTIFY pyvault_token_refresh, 'forged'")
                time.sleep(0.02)  # a flood spread over ~2 s: the service's rate limit is real time
            flood = time.monotonic() - started
        wait_for(lambda: sum(s["notifications"] for s in sweeps()) == 100, timeout=10,
                 what="every notification answered")
        woken = [s for s in sweeps() if s["trigger"] == "notify"]
        assert 1 <= len(woken) <= flood / 1.0 + 2, (flood, woken)
    finally:
        code = service.stop()
        LOGS.extend(service.lines)
    assert code == 0


def test_no_listen_sweeps_without_a_listener_and_a_bad_listen_url_is_refused(tmp_path, conn,
                                                                              refresher_url):
    token = make_token(conn, "3 days", user="svc-no-listen")
    path = _store(tmp_path, "svc", token)
    service = refresher("--store", str(path), "--database", refresher_url,
                        "--sweep-interval", "3600", "--no-listen")
    try:
        wait_for(lambda: TokenStore(path).get("svc").token != token, what="the start sweep")
        # An absence cannot be polled for: a listener, if one were started, says
        # "listening" within milliseconds of the start; half a second is its window.
        time.sleep(0.5)
    finally:
        code = service.stop()
        LOGS.extend(service.lines)
    assert code == 0, service.output
    events = [e["event"] for e in service.events()]
    assert "listening" not in events and events[-1] == "stopped"
    assert not any(e.startswith("notifications do not reach") for e in events)

    bad = subprocess.run([*CLI, "refresher", "--store", str(path), "--database", refresher_url,
                          "--listen-database", "mysql://x:secret@host/db", "--once"],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1, bad.stderr
    assert "not a PostgreSQL URL" in bad.stderr and "secret" not in bad.stderr


# Last in the module: it reads the logs every test above captured.
def test_no_log_line_holds_a_token():
    assert LOGS, "the tests above captured the service's logs"
    leaks = [line for line in LOGS if SECRET.search(line)]
    assert leaks == []
