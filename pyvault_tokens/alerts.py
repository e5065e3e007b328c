"""Open refresh alerts, for ``pyvault-tokens alerts`` and monitoring checks.

``print_alerts`` returns a Nagios-style exit code, so the command can be a check in
Nagios, Icinga, Sensu or a cron job:

- 0 (OK): no open alert;
- 1 (WARNING): open alerts, all of severity ``warning``;
- 2 (CRITICAL): at least one open alert of severity ``critical``.

The CLI exits 3 (UNKNOWN) when the database cannot be queried.
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg.rows import dict_row
from rich.console import Console
from rich.markup import escape
from rich.table import Table

OK, WARNING, CRITICAL, UNKNOWN = 0, 1, 2, 3

ALERTS_SQL = (
    "SELECT a.alert, a.severity, a.message, a.observed, a.since"
    " FROM auth.refresh_alerts AS a"
    " ORDER BY a.severity = 'critical' DESC, a.alert"
)


def fetch_alerts(conn: psycopg.Connection) -> list[dict[str, Any]]:
    """The open alerts (alert, severity, message, observed, since), critical first."""
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(ALERTS_SQL).fetchall()


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


def print_alerts(alerts: list[dict[str, Any]], console: Console | None = None) -> int:
    """Print the alerts as a table (or a one-line OK); returns the exit code."""
    console = console or Console()
    code = exit_code(alerts)
    if code == OK:
        console.print("OK: no open alerts")
        return code
    table = Table(title=f"{'CRITICAL' if code == CRITICAL else 'WARNING'}: "
                        f"{len(alerts)} open alert{'s' if len(alerts) > 1 else ''}")
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
    console.print(table)
    return code
