"""Prometheus metrics and alert exit codes, against real databases and a real HTTP server."""

from __future__ import annotations

import io
import json
import os
import re
import signal
import subprocess
import sys
import urllib.request
from decimal import Decimal
from pathlib import Path

import psycopg
import pytest
from prometheus_client.parser import text_string_to_metric_families
from rich.console import Console

from pyvault_tokens import api
from pyvault_tokens.alerts import exit_code, fetch_alerts, format_observed, print_alerts
from pyvault_tokens.metrics import KNOWN_ALERTS, parse_listen, render, start
from tests.harness import login
from tests.servers import closed_port
from tests.tokens import make_token

ROOT = Path(__file__).resolve().parent.parent
REFRESH_SQL = "SELECT * FROM auth.validate_and_refresh_api_token(%s)"
FAIL_SQL = (
    "INSERT INTO auth.token_refresh_event"
    " (api_token_hk, tenant_hk, refresh_trigger, outcome, reason)"
    " SELECT b.api_token_hk, b.tenant_hk, 'BATCH', 'FAILED', 'TEST_FAILURE'"
    " FROM auth.api_token_bridge AS b, generate_series(1, %s)"
    " WHERE b.token_hash = sha256(convert_to(%s, 'UTF8'))"
)


@pytest.fixture
def fresh_url(cluster, request) -> str:
    """A database of its own: alerts look at the whole database."""
    return cluster.fresh_database(request.node.name)


def samples(text: str) -> dict[tuple[str, frozenset], float]:
    """Every sample of an exposition, keyed by name and labels."""
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(found: dict, name: str, **labels: str) -> float:
    return found[(name, frozenset(labels.items()))]


def test_render_counts_refreshes_expiry_usage_and_alerts(fresh_url):
    with psycopg.connect(fresh_url, autocommit=True) as conn:
        soon = [make_token(conn, "3 days", tenant="metrics") for _ in range(3)]
        later = make_token(conn, "20 days", tenant="metrics")
        held = make_token(conn, "5 days", tenant="other")
        for token in soon[:2]:
            row = conn.execute(REFRESH_SQL, (token,)).fetchone()
            assert row is not None
        conn.execute(FAIL_SQL, (3, later))
        # A refresher service holds `held`, so it has a refresh path.
        conn.execute("SELECT auth.record_refresher_heartbeat(%s, %s)", ("svc-1", [held]))

    text = render(fresh_url)
    families = {f.name: f for f in text_string_to_metric_families(text)}
    assert families["pyvault_tokens_refresh"].type == "counter"
    assert families["pyvault_tokens_expiring"].type == "gauge"
    found = samples(text)

    assert value(found, "pyvault_tokens_up") == 1
    refresh = {k: v for k, v in found.items() if k[0] == "pyvault_tokens_refresh_total"}
    assert refresh == {
        ("pyvault_tokens_refresh_total", frozenset(
            {"trigger": "ON_DEMAND", "outcome": "ROTATED", "reason": "EXPIRING_SOON"}.items())): 2,
        ("pyvault_tokens_refresh_total", frozenset(
            {"trigger": "BATCH", "outcome": "FAILED", "reason": "TEST_FAILURE"}.items())): 3,
    }

    # Live: 1 unrotated soon, 2 successors (30 days), later (20 days), held (5 days).
    # The windows are disjoint: each token is counted in one of them.
    expiring = {(w, p): value(found, "pyvault_tokens_expiring", window=w, refresh_path=p)
                for w in ("0-1d", "1-7d", "7-30d") for p in ("yes", "no")}
    assert expiring == {("0-1d", "yes"): 0, ("0-1d", "no"): 0,
                        ("1-7d", "yes"): 1, ("1-7d", "no"): 1,
                        ("7-30d", "yes"): 0, ("7-30d", "no"): 3}
    assert len([k for k in found if k[0] == "pyvault_tokens_expiring"]) == 6
    assert value(found, "pyvault_tokens_live") == 5
    assert sum(expiring.values()) == 5, "sum() over the windows counts each live token once"
    assert value(found, "pyvault_tokens_idle") == 5  # nothing live has a recorded use

    # 2 rotations + 3 failures in the last hour: a 60 % failure rate; no batch run yet.
    alerts = {k: v for k, v in found.items() if k[0] == "pyvault_tokens_alert"}
    open_alerts = {dict(labels)["alert"]: dict(labels)["severity"]
                   for (_, labels), v in alerts.items() if v == 1}
    assert open_alerts == {"REFRESH_FAILURE_RATE": "critical", "BATCH_JOB_STALE": "warning"}
    assert len(alerts) == len(KNOWN_ALERTS), "every known alert is exposed, 0 when closed"


def test_windows_are_disjoint_at_their_edges(fresh_url):
    """A token expiring in 12 hours is in 0-1d only, one in 2 days in 1-7d only, one in
    10 days in 7-30d only; sum() over every window and path gives the three of them."""
    with psycopg.connect(fresh_url, autocommit=True) as conn:
        for ttl in ("12 hours", "2 days", "10 days", "40 days"):
            make_token(conn, ttl)
    found = samples(render(fresh_url))
    by_window = {w: sum(v for (name, labels), v in found.items()
                        if name == "pyvault_tokens_expiring" and dict(labels)["window"] == w)
                 for w in ("0-1d", "1-7d", "7-30d")}
    assert by_window == {"0-1d": 1, "1-7d": 1, "7-30d": 1}  # the 40-day token is in none
    assert value(found, "pyvault_tokens_live") == 4


def test_last_batch_run_time_duration_and_tokens(fresh_url):
    def batch_samples() -> dict:
        return {k: v for k, v in samples(render(fresh_url)).items()
                if k[0].startswith("pyvault_tokens_batch_last_run")}

    assert batch_samples() == {}, "no sample before the first run"
    with psycopg.connect(fresh_url, autocommit=True) as conn:
        make_token(conn, "3 days", token_type="API_KEY")  # EXTEND: the batch extends it
        make_token(conn, "3 days")  # ROTATE: enqueued for its holder
        api.refresh_batch(conn)
        run = conn.execute("SELECT extract(EPOCH FROM started_at)::float8,"
                           " extract(EPOCH FROM finished_at - started_at)::float8"
                           " FROM auth.token_refresh_batch_run ORDER BY run_id DESC LIMIT 1"
                           ).fetchone()
        found = batch_samples()
        api.refresh_batch(conn, dry_run=True)  # a dry run is not a run
        assert batch_samples() == found
    assert found == {
        ("pyvault_tokens_batch_last_run_timestamp_seconds", frozenset()): pytest.approx(run[0]),
        ("pyvault_tokens_batch_last_run_duration_seconds", frozenset()): pytest.approx(run[1]),
        ("pyvault_tokens_batch_last_run_tokens", frozenset({"action": "extended"}.items())): 1,
        ("pyvault_tokens_batch_last_run_tokens", frozenset({"action": "enqueued"}.items())): 1,
        ("pyvault_tokens_batch_last_run_tokens", frozenset({"action": "failed"}.items())): 0,
    }
    assert run[1] >= 0


def test_counter_grows_with_refreshes(fresh_url):
    def rotated() -> float:
        found = samples(render(fresh_url))
        return found.get(("pyvault_tokens_refresh_total", frozenset(
            {"trigger": "ON_DEMAND", "outcome": "ROTATED", "reason": "EXPIRING_SOON"}.items())),
            0)

    assert rotated() == 0
    with psycopg.connect(fresh_url, autocommit=True) as conn:
        conn.execute(REFRESH_SQL, (make_token(conn, "2 days"),))
    assert rotated() == 1
    with psycopg.connect(fresh_url, autocommit=True) as conn:
        conn.execute(REFRESH_SQL, (make_token(conn, "2 days"),))
    assert rotated() == 2


def test_up_is_zero_when_the_database_is_unreachable():
    url = f"postgresql://nobody@127.0.0.1:{closed_port()}/nothing?connect_timeout=2"
    text = render(url)
    found = samples(text)
    assert found == {("pyvault_tokens_up", frozenset()): 0}


def test_up_is_zero_without_the_monitoring_views(cluster, request):
    url = cluster.create_database(f"bare_{request.node.name[:30]}")
    assert samples(render(url)) == {("pyvault_tokens_up", frozenset()): 0}


def test_a_monitor_login_can_scrape(cluster, fresh_url):
    """What a deployment does: a login that is only a member of pyvault_monitor."""
    url = login(fresh_url, "metrics_test", "pyvault_monitor")
    with psycopg.connect(fresh_url, autocommit=True) as conn:
        make_token(conn, "3 days")
        api.refresh_batch(conn)
    found = samples(render(url))
    assert value(found, "pyvault_tokens_up") == 1
    assert value(found, "pyvault_tokens_live") == 1
    assert value(found, "pyvault_tokens_batch_last_run_tokens", action="enqueued") == 1


def test_parse_listen():
    assert parse_listen("127.0.0.1:9464") == ("127.0.0.1", 9464)
    assert parse_listen(":9464") == ("0.0.0.0", 9464)  # noqa: S104
    assert parse_listen("[::1]:9000") == ("::1", 9000)
    for bad in ("9464", "host:", "host:http", "h:70000"):
        with pytest.raises(ValueError):
            parse_listen(bad)


def _scrape(port: int) -> tuple[int, str, str]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
        return resp.status, resp.headers["Content-Type"], resp.read().decode()


def test_http_server_answers_metrics(fresh_url):
    with psycopg.connect(fresh_url, autocommit=True) as conn:
        make_token(conn, "3 days")
    server, thread = start(fresh_url, "127.0.0.1", 0)
    try:
        status, content_type, body = _scrape(server.server_port)
        assert status == 200
        assert content_type.startswith("text/plain")
        found = samples(body)
        assert value(found, "pyvault_tokens_up") == 1
        assert value(found, "pyvault_tokens_live") == 1
    finally:
        server.shutdown()
        server.server_close()
    thread.join(timeout=5)
    assert not thread.is_alive()


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_serve_in_its_own_process(db_url, stop):
    """serve() as the CLI runs it: announces its address, answers, stops cleanly."""
    code = ("import sys; from pyvault_tokens.metrics import serve;"
            " serve(sys.argv[1], '127.0.0.1', 0)")
    proc = subprocess.Popen([sys.executable, "-c", code, db_url], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ})
    try:
        line = proc.stdout.readline()
        assert "serving Prometheus metrics on http://127.0.0.1:" in line, proc.stderr.read()
        port = int(line.rsplit(":", 1)[1].split("/", 1)[0])
        status, _, body = _scrape(port)
        assert status == 200
        assert value(samples(body), "pyvault_tokens_up") == 1
        proc.send_signal(stop)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _alerts_exit(url: str) -> tuple[int, list[dict], str]:
    console = Console(file=io.StringIO(), width=200)
    with psycopg.connect(url, autocommit=True) as conn:
        alerts = fetch_alerts(conn)
    code = print_alerts(alerts, console)
    return code, alerts, console.file.getvalue()


def test_alerts_exit_0_when_nothing_is_open(fresh_url):
    with psycopg.connect(fresh_url, autocommit=True) as conn:
        make_token(conn, "20 days")
        api.refresh_batch(conn)  # the batch job has run: not stale
    code, alerts, output = _alerts_exit(fresh_url)
    assert (code, alerts) == (0, [])
    assert "OK: no open alerts" in output


def test_alerts_exit_1_on_warnings_only(fresh_url):
    with psycopg.connect(fresh_url, autocommit=True) as conn:
        make_token(conn, "20 days")  # live tokens, and the batch job has never run
        conn.execute("SELECT auth.record_refresher_heartbeat('gone', '{}')")
        conn.execute("UPDATE auth.refresher_heartbeat SET last_seen_at = now() - interval '3h'")
    code, alerts, output = _alerts_exit(fresh_url)
    assert code == 1
    assert {a["alert"]: a["severity"] for a in alerts} == {
        "BATCH_JOB_STALE": "warning", "REFRESHER_NOT_SEEN": "warning"}
    assert "WARNING: 2 open alerts" in output
    assert "REFRESHER_NOT_SEEN" in output


def test_alerts_exit_2_on_a_critical_alert(fresh_url):
    with psycopg.connect(fresh_url, autocommit=True) as conn:
        token = make_token(conn, "20 days")
        api.refresh_batch(conn)
        conn.execute(FAIL_SQL, (5, token))
    code, alerts, output = _alerts_exit(fresh_url)
    assert code == 2
    assert [(a["alert"], a["severity"]) for a in alerts] == [
        ("REFRESH_FAILURE_RATE", "critical")]
    assert alerts[0]["observed"] == 1
    assert "CRITICAL: 1 open alert" in output
    assert "5 of 5 refreshes failed" in output


def test_the_grafana_dashboard_queries_exported_metrics(db_url):
    """docs/grafana-dashboard.json asks only for metrics and labels the exporter has."""
    dashboard = json.loads((ROOT / "docs" / "grafana-dashboard.json").read_text())
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(REFRESH_SQL, (make_token(conn, "2 days"),))
        api.refresh_batch(conn)  # the last-run metrics have a sample once a batch has run
    exposed = samples(render(db_url))
    names = {name for name, _ in exposed}
    labels = {label for _, pairs in exposed for label, _ in pairs} | {"instance", "job"}
    windows = {v for _, pairs in exposed for label, v in pairs if label == "window"}

    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    assert len({p["id"] for p in dashboard["panels"]}) == len(dashboard["panels"])
    exprs = [t["expr"] for p in panels for t in p["targets"]]
    assert len(exprs) >= len(panels)
    for expr in exprs:
        used = set(re.findall(r"pyvault_tokens_\w+", expr))
        assert used and used <= names, f"{expr}: unknown {used - names}"
        for group in re.findall(r"by \(([^)]*)\)", expr):
            assert {g.strip() for g in group.split(",")} <= labels, expr
        for label in re.findall(r"(\w+)=~?\"", expr):
            assert label in labels, expr
        for window in re.findall(r'window="([^"]*)"', expr):
            assert window in windows, f"{expr}: no window {window!r}"
    assert all(p["datasource"]["uid"] == "${datasource}" for p in panels)
    variables = {v["name"] for v in dashboard["templating"]["list"]}
    assert variables == {"datasource", "instance"}


def test_exit_code_and_observed_formatting():
    warning, critical = {"severity": "warning"}, {"severity": "critical"}
    assert exit_code([]) == 0
    assert exit_code([warning, warning]) == 1
    assert exit_code([warning, critical]) == 2
    assert exit_code([{"severity": "page-someone"}]) == 2, "an unknown severity is not OK"
    assert [format_observed(v) for v in (None, Decimal("0.5000"), Decimal("86400"))] == [
        "-", "0.5", "86,400"]
