"""Open refresh alerts, for ``pyvault-tokens alerts`` and monitoring checks.

``pyvault-tokens alerts`` is a Nagios plugin (Nagios, Icinga, Sensu, a cron job): the
first line of stdout is the status, ``PYVAULT <STATE> - <text> | <perfdata>``, with the
alerts as a table below it, and the exit code is the state:

- 0 (OK): no open alert;
- 1 (WARNING): open alerts, all of severity ``warning``;
- 2 (CRITICAL): at least one open alert of severity ``critical``;
- 3 (UNKNOWN): the database cannot be queried (unavailable, not migrated, no role).
"""

from __future__ import annotations

from typing import Any

import psycopg
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from pyvault_tokens import api

OK, WARNING, CRITICAL, UNKNOWN = 0, 1, 2, 3
STATES = {OK: "OK", WARNING: "WARNING", CRITICAL: "CRITICAL", UNKNOWN: "UNKNOWN"}


def fetch_alerts(conn: psycopg.Connection) -> list[dict[str, Any]]:
    """The open alerts (alert, severity, message, observed, since), critical first
    (``pyvault_tokens.api.open_alerts``)."""
    return api.open_alerts(conn)


def exit_code(alerts: list[dict[str, Any]]) -> int:
    """0 with no alert, 2 with any critical one, else 1."""
    if not alerts:
        return OK
    if any(a["severity"] != "warning" for a in alerts):
        return CRITICAL  # critical, or a severity this version does not know
    return WARNING


def format_observed(value: Any) -> str:
    """An alert's observed value for people: 0.5, 7,200, 1,234.5678; '-' when there is none."""
    if value is None:
        return "-"
    return f"{value:,.4f}".rstrip("0").rstrip(".")


def _count(alerts: list[dict[str, Any]]) -> str:
    return f"{len(alerts)} open alert{'s' if len(alerts) > 1 else ''}"


def status_line(alerts: list[dict[str, Any]]) -> str:
    """The Nagios plugin's first line: ``PYVAULT WARNING - 2 open alerts: A, B | ...``."""
    code = exit_code(alerts)
    text = f"{_count(alerts)}: {', '.join(a['alert'] for a in alerts)}" if alerts \
        else "no open alerts"
    critical = sum(a["severity"] != "warning" for a in alerts)
    perfdata = f"critical={critical};;;0 warning={len(alerts) - critical};;;0"
    return f"PYVAULT {STATES[code]} - {text} | {perfdata}"


def unknown_line(reason: str) -> str:
    """The first line when the check could not run (exit 3)."""
    return f"PYVAULT UNKNOWN - {' '.join(reason.split())}"


def print_check(alerts: list[dict[str, Any]], console: Console | None = None) -> int:
    """Print the status line, then the alerts as a table; returns the exit code."""
    console = console or Console()
    console.print(status_line(alerts), markup=False, highlight=False, soft_wrap=True)
    if alerts:
        console.print(_table(alerts))
    return exit_code(alerts)


def print_alerts(alerts: list[dict[str, Any]], console: Console | None = None) -> int:
    """Print the alerts as a table (or a one-line OK); returns the exit code."""
    console = console or Console()
    code = exit_code(alerts)
    if code == OK:
        console.print("OK: no open alerts")
        return code
    console.print(_table(alerts))
    return code


def _table(alerts: list[dict[str, Any]]) -> Table:
    code = exit_code(alerts)
    table = Table(title=f"{STATES[code]}: {_count(alerts)}")
    table.add_column("alert", no_wrap=True)
    table.add_column("severity", no_wrap=True)
    table.add_column("message", overflow="fold")
    table.add_column("observed", justify="right")
    table.add_column("since", no_wrap=True)
    for a in alerts:
        style = "red" if a["severity"] == "critical" else "yellow"
        since = a["since"].isoformat(sep=" ", timespec="seconds") if a["since"] else "-"
        table.add_row(escape(a["alert"]), f"[{style}]{escape(a['severity'])}[/{style}]",
                      escape(a["message"] or ""), format_observed(a["observed"]), since)
    return table
