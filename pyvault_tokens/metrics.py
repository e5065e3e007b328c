"""Prometheus metrics over the monitoring views, for ``pyvault-tokens metrics``.

A custom ``prometheus_client`` collector: every scrape opens one connection, reads the
views in one read-only snapshot, and closes it. When the database cannot be queried the
scrape still answers, with ``pyvault_tokens_up 0`` and nothing else, so Prometheus can
alert on it. Needs the ``monitoring`` extra (``prometheus_client``).

Metrics:

- ``pyvault_tokens_refresh_total{trigger,outcome,reason}``: counter of refresh events
  (``auth.refresh_metrics_hourly``, summed over all hours);
- ``pyvault_tokens_expiring{window,refresh_path}``: gauge of live tokens expiring in
  disjoint windows, ``0-1d`` (the next 24 hours), ``1-7d`` and ``7-30d`` from now, with
  and without a refresh path (``auth.token_expiry_forecast``): each token is in one
  window at most, so ``sum()`` over windows counts it once;
- ``pyvault_tokens_live`` and ``pyvault_tokens_idle``: gauges of live and idle tokens
  (``auth.tenant_usage_patterns``);
- ``pyvault_tokens_batch_last_run_timestamp_seconds``, ``..._duration_seconds`` and
  ``pyvault_tokens_batch_last_run_tokens{action}``: when the last batch run (neither
  skipped nor a dry run) started, how long it took, and what it did
  (``auth.refresh_batch_runs``); no sample before the first run;
- ``pyvault_tokens_alert{alert,severity}``: 1 for each open alert (``auth.refresh_alerts``),
  0 for each known alert that is not open;
- ``pyvault_tokens_up``: 1 when the scrape could query the database, else 0.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable, Iterator
from functools import partial
from types import FrameType
from typing import NamedTuple
from wsgiref.simple_server import WSGIServer

import psycopg
from prometheus_client import CollectorRegistry, generate_latest, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from pyvault_tokens import api
from pyvault_tokens.errors import mask_url

log = logging.getLogger(__name__)

DEFAULT_PORT = 9464

# The alerts auth.get_refresh_alerts() can raise; each is exposed as 0 while it is not
# open, so dashboards and alert rules see a series rather than nothing.
KNOWN_ALERTS = {
    "REFRESH_FAILURE_RATE": "critical",
    "REUSE_DETECTED": "critical",
    "EXPIRING_WITHOUT_REFRESH_PATH": "warning",
    "BATCH_JOB_STALE": "warning",
    "CRON_JOB_FAILED": "warning",
    "REFRESHER_NOT_SEEN": "warning",
}

# Expiry windows: label -> the days_ahead of auth.token_expiry_forecast they cover
# (days_ahead d counts the tokens expiring between d and d + 1 days from now). Disjoint,
# so that sum() over the windows counts every token once.
WINDOWS = {"0-1d": range(0, 1), "1-7d": range(1, 7), "7-30d": range(7, 30)}
BATCH_ACTIONS = ("extended", "enqueued", "failed")


class _Families(NamedTuple):
    """The metric families of one scrape, in the order they are exposed."""

    refresh: CounterMetricFamily
    expiring: GaugeMetricFamily
    live: GaugeMetricFamily
    idle: GaugeMetricFamily
    alert: GaugeMetricFamily
    batch_time: GaugeMetricFamily
    batch_duration: GaugeMetricFamily
    batch_tokens: GaugeMetricFamily


class RefreshCollector(Collector):
    """Collects the pyvault-tokens metrics from the database at ``database_url``."""

    def __init__(self, database_url: str, *, connect_timeout: int = 5,
                 statement_timeout_ms: int = 10_000, quiet: bool = False) -> None:
        self.database_url = database_url
        self.connect_timeout = connect_timeout
        self.statement_timeout_ms = statement_timeout_ms
        self.quiet = quiet
        self.last_error: psycopg.Error | None = None  # why the last scrape said up 0

    def describe(self) -> Iterator[Metric]:
        # The metric names, without querying the database at registration.
        yield from self._families()
        yield self._up(0)

    def collect(self) -> Iterator[Metric]:
        try:
            families = self._read()
        except psycopg.Error as exc:
            self.last_error = exc
            if not self.quiet:
                log.warning("pyvault-tokens metrics: cannot query the database: %s",
                            mask_url(str(exc).split("\n", 1)[0]))
            yield self._up(0)
            return
        self.last_error = None
        yield from families
        yield self._up(1)

    @staticmethod
    def _families() -> _Families:
        return _Families(
            CounterMetricFamily(
                "pyvault_tokens_refresh", "Refresh events by trigger, outcome and reason code.",
                labels=["trigger", "outcome", "reason"]),
            GaugeMetricFamily(
                "pyvault_tokens_expiring",
                "Live tokens expiring in the window (0-1d, 1-7d, 7-30d from now; disjoint), "
                "with and without a refresh path.",
                labels=["window", "refresh_path"]),
            GaugeMetricFamily("pyvault_tokens_live",
                              "Live tokens (not revoked, not rotated, not expired)."),
            GaugeMetricFamily("pyvault_tokens_idle",
                              "Live tokens not used within monitoring_config.idle_after."),
            GaugeMetricFamily("pyvault_tokens_alert", "1 when the alert is open, else 0.",
                              labels=["alert", "severity"]),
            GaugeMetricFamily(
                "pyvault_tokens_batch_last_run_timestamp_seconds",
                "Unix time the last batch refresh run (not skipped, not a dry run) started."),
            GaugeMetricFamily("pyvault_tokens_batch_last_run_duration_seconds",
                              "How long the last batch refresh run took, in seconds."),
            GaugeMetricFamily("pyvault_tokens_batch_last_run_tokens",
                              "Tokens the last batch refresh run extended, enqueued for their "
                              "holders, or failed.", labels=["action"]),
        )

    @staticmethod
    def _up(value: int) -> GaugeMetricFamily:
        return GaugeMetricFamily("pyvault_tokens_up",
                                 "1 when the database could be queried, else 0.", value=value)

    def _read(self) -> list[Metric]:
        families = self._families()
        refresh, expiring, live, idle, alert, batch_time, batch_duration, batch_tokens = families
        with psycopg.connect(self.database_url, connect_timeout=self.connect_timeout,
                             application_name="pyvault-tokens-metrics") as conn:
            # One snapshot for every view, so the numbers agree with each other.
            conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
            conn.read_only = True
            conn.execute("SELECT set_config('statement_timeout', %s, true)",
                         (str(self.statement_timeout_ms),))
            events = api.refresh_metrics(conn)
            forecast = api.expiry_forecast(conn)
            tenants = api.tenant_usage(conn)
            open_alerts = {r["alert"]: r["severity"] for r in api.open_alerts(conn)}
            last_batch = api.last_batch_run(conn)
            conn.rollback()
        for row in events:
            refresh.add_metric([row["refresh_trigger"], row["outcome"], row["reason"]],
                               row["attempts"])
        for window, days in WINDOWS.items():
            inside = [r for r in forecast if r["days_ahead"] in days]
            expiring.add_metric([window, "yes"], sum(r["with_refresh_path"] for r in inside))
            expiring.add_metric([window, "no"], sum(r["without_refresh_path"] for r in inside))
        live.add_metric([], sum(r["live_tokens"] for r in tenants))
        idle.add_metric([], sum(r["idle_tokens"] for r in tenants))
        for name, severity in KNOWN_ALERTS.items():
            alert.add_metric([name, open_alerts.get(name, severity)], int(name in open_alerts))
        for name, severity in sorted(open_alerts.items()):
            if name not in KNOWN_ALERTS:
                alert.add_metric([name, severity], 1)
        if last_batch is not None:
            batch_time.add_metric([], last_batch["started_at"].timestamp())
            batch_duration.add_metric([], last_batch["duration_seconds"])
            for action in BATCH_ACTIONS:
                batch_tokens.add_metric([action], last_batch[f"tokens_{action}"])
        return [*families]


def registry(database_url: str) -> CollectorRegistry:
    """A dedicated registry holding only the pyvault-tokens collector."""
    reg = CollectorRegistry()
    reg.register(RefreshCollector(database_url))
    return reg


def render(database_url: str) -> str:
    """One scrape, in the Prometheus text exposition format."""
    return generate_latest(registry(database_url)).decode("utf-8")


def scrape(database_url: str) -> tuple[str, psycopg.Error | None]:
    """One scrape, and the error that made it say ``pyvault_tokens_up 0`` (None when up).
    Logs nothing: the caller reports the error."""
    reg = CollectorRegistry()
    collector = RefreshCollector(database_url, quiet=True)
    reg.register(collector)
    return generate_latest(reg).decode("utf-8"), collector.last_error


def parse_listen(value: str) -> tuple[str, int]:
    """``HOST:PORT``, ``:PORT`` (all interfaces) or ``[IPv6]:PORT`` to (host, port)."""
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"{value!r} is not HOST:PORT")
    host = host.strip("[]") or "0.0.0.0"  # noqa: S104 - an empty host means all interfaces
    return host, int(port)


def start(database_url: str, host: str = "127.0.0.1",
          port: int = DEFAULT_PORT) -> tuple[WSGIServer, threading.Thread]:
    """Serve /metrics from a daemon thread; returns the server (``server_port`` is the
    bound port, useful with port 0) and its thread. Stop it with ``server.shutdown()``."""
    return start_http_server(port, addr=host, registry=registry(database_url))


def _exit_cleanly(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(0)


def serve(database_url: str, host: str = "127.0.0.1", port: int = DEFAULT_PORT,
          announce: Callable[[str], object] | None = None) -> None:
    """Serve /metrics until SIGINT or SIGTERM; ``announce`` is told the address once
    listening."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _exit_cleanly)
    server, thread = start(database_url, host, port)
    announce = announce or partial(print, flush=True)
    shown = f"[{host}]" if ":" in host else host
    announce(f"serving Prometheus metrics on http://{shown}:{server.server_port}/metrics")
    try:
        thread.join()
    except (KeyboardInterrupt, SystemExit):
        pass
    finally:
        server.shutdown()
        server.server_close()
