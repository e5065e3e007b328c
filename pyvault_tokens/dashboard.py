"""A self-contained HTML dashboard over the monitoring views, for ``pyvault-tokens dashboard``.

The page works offline: plotly.js is embedded inline once, and nothing on the page
refers to a network address, so it can be mailed, archived or opened on an air-gapped
machine. Charts are drawn with plotly (the ``monitoring`` extra); the rest is plain HTML.
"""

from __future__ import annotations

import html
from datetime import UTC, datetime, timedelta
from typing import Any

import plotly.graph_objects as go
import psycopg
from plotly.offline import get_plotlyjs
from psycopg.rows import dict_row

from pyvault_tokens import api
from pyvault_tokens.alerts import fetch_alerts, format_observed
from pyvault_tokens.api import Row

# Refresh outcomes in a fixed order and colour, so every chart and every page agrees.
OUTCOME_COLOURS = {
    "ROTATED": "#1f77b4",
    "EXTENDED": "#2ca02c",
    "ALREADY_REFRESHED": "#17becf",
    "NOT_NEEDED": "#b0b0b0",
    "ENQUEUED": "#9467bd",
    "REJECTED": "#ff7f0e",
    "FAILED": "#d62728",
}
WITH_PATH, WITHOUT_PATH = "#2ca02c", "#ff7f0e"
ACTIVE, IDLE = "#1f77b4", "#c7c7c7"
MAX_TENANTS = 25
HOUR_MS = 3_600_000

META_SQL = "SELECT now() AS generated_at, current_database() AS database_name"


def _rows(conn: psycopg.Connection, sql: str) -> list[Row]:
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(sql).fetchall()


def _per_hour(rows: list[Row], key: str) -> list[Row]:
    """Hourly refresh metrics (api.refresh_metrics by_hour) summed by hour and ``key``."""
    sums: dict[tuple[Any, Any], int] = {}
    for r in rows:
        sums[(r["hour"], r[key])] = sums.get((r["hour"], r[key]), 0) + r["attempts"]
    return [{"hour": hour, key: value, "attempts": n}
            for (hour, value), n in sorted(sums.items())]


def _utc(value: datetime) -> datetime:
    """plotly.js has no time zones: hand it naive UTC and say so on the axis."""
    return value.astimezone(UTC).replace(tzinfo=None)


def _label(text: str) -> str:
    """Data shown as text in a chart: plotly reads <b>, <a href> and the like in labels as
    markup, so escape it to show tenant names and reason codes as they are."""
    return html.escape(str(text), quote=False)


def _figure(title: str, y_title: str) -> go.Figure:
    fig = go.Figure()
    fig.update_layout(
        title={"text": title, "x": 0.01}, template="plotly_white", barmode="stack",
        height=360, margin={"l": 60, "r": 20, "t": 50, "b": 40},
        legend={"orientation": "h", "y": -0.12}, yaxis_title=y_title,
        yaxis_rangemode="nonnegative",
    )
    return fig


def _hourly_axis(fig: go.Figure, start: datetime, end: datetime) -> None:
    """The whole period on the axis, one-hour bars, however few hours have data."""
    fig.update_xaxes(type="date", range=[_utc(start), _utc(end)])
    fig.update_traces(width=HOUR_MS * 0.9, xperiod=HOUR_MS, xperiodalignment="start")


def _no_data(fig: go.Figure, text: str) -> None:
    fig.add_annotation(text=text, showarrow=False, xref="paper", yref="paper", x=0.5, y=0.5,
                       font={"size": 16, "color": "#888"})


def refreshes_chart(rows: list[Row], start: datetime, end: datetime) -> go.Figure:
    fig = _figure("Refreshes per hour by outcome (UTC)", "refreshes")
    for outcome, colour in OUTCOME_COLOURS.items():
        points = [r for r in rows if r["outcome"] == outcome]
        if points:
            fig.add_bar(name=outcome, marker_color=colour,
                        x=[_utc(r["hour"]) for r in points], y=[r["attempts"] for r in points])
    _hourly_axis(fig, start, end)
    if not rows:
        _no_data(fig, "no refresh events in this period")
    return fig


def failures_chart(rows: list[Row], start: datetime, end: datetime) -> go.Figure:
    fig = _figure("Failed refreshes per hour by reason (UTC)", "failures")
    for reason in sorted({r["reason"] for r in rows}):
        points = [r for r in rows if r["reason"] == reason]
        fig.add_bar(name=_label(reason), x=[_utc(r["hour"]) for r in points],
                    y=[r["attempts"] for r in points])
    _hourly_axis(fig, start, end)
    if not rows:
        _no_data(fig, "no failed refreshes in this period")
    return fig


def forecast_chart(rows: list[Row]) -> go.Figure:
    fig = _figure("Tokens expiring per day, next 30 days", "tokens")
    days = [r["day"] for r in rows]
    fig.add_bar(name="with a refresh path", marker_color=WITH_PATH, x=days,
                y=[r["with_refresh_path"] for r in rows])
    fig.add_bar(name="without a refresh path", marker_color=WITHOUT_PATH, x=days,
                y=[r["without_refresh_path"] for r in rows])
    if not any(r["with_refresh_path"] or r["without_refresh_path"] for r in rows):
        _no_data(fig, "no live token expires in the next 30 days")
    return fig


def requests_chart(rows: list[Row]) -> go.Figure:
    rows = rows[:MAX_TENANTS]
    fig = _figure("Recorded requests per day by tenant", "requests per day")
    fig.add_bar(name="requests per day", marker_color=ACTIVE, showlegend=False,
                x=[_label(r["tenant"]) for r in rows],
                y=[round(float(r["requests_per_day"] or 0), 2) for r in rows])
    fig.update_xaxes(type="category")  # a tenant named "2024" is a name, not a number
    if not rows:
        _no_data(fig, "no live tokens")
    return fig


def idle_chart(rows: list[Row]) -> go.Figure:
    rows = rows[:MAX_TENANTS]
    fig = _figure("Live tokens by tenant: active and idle", "tokens")
    tenants = [_label(r["tenant"]) for r in rows]
    fig.add_bar(name="active", marker_color=ACTIVE, x=tenants,
                y=[r["live_tokens"] - r["idle_tokens"] for r in rows])
    fig.add_bar(name="idle", marker_color=IDLE, x=tenants, y=[r["idle_tokens"] for r in rows])
    fig.update_xaxes(type="category")
    if not rows:
        _no_data(fig, "no live tokens")
    return fig


def _alerts_html(alerts: list[Row]) -> str:
    if not alerts:
        return '<p class="ok">No open alerts.</p>'
    rows = []
    for a in alerts:
        since = _utc(a["since"]).isoformat(sep=" ", timespec="seconds") if a["since"] else "-"
        observed = format_observed(a["observed"])
        rows.append(
            f'<tr class="{html.escape(a["severity"])}"><td>{html.escape(a["alert"])}</td>'
            f"<td>{html.escape(a['severity'])}</td><td>{html.escape(a['message'] or '')}</td>"
            f'<td class="num">{html.escape(observed)}</td><td>{html.escape(since)}</td></tr>')
    return ("<table><thead><tr><th>alert</th><th>severity</th><th>message</th>"
            "<th>observed</th><th>since (UTC)</th></tr></thead><tbody>"
            + "".join(rows) + "</tbody></table>")


def _card(label: str, value: Any, warn: bool = False) -> str:
    cls = "card warn" if warn else "card"
    return (f'<div class="{cls}"><div class="value">{html.escape(str(value))}</div>'
            f'<div class="label">{html.escape(label)}</div></div>')


CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 0;
       background: #f5f6f8; color: #222; }
header { background: #1f2937; color: #fff; padding: 16px 24px; }
header h1 { margin: 0; font-size: 22px; }
header p { margin: 4px 0 0; color: #cbd5e1; font-size: 14px; }
main { padding: 16px 24px; }
section { background: #fff; border-radius: 6px; padding: 12px 16px; margin-bottom: 16px;
          box-shadow: 0 1px 2px rgba(0,0,0,.08); }
h2 { font-size: 17px; margin: 4px 0 10px; }
table { border-collapse: collapse; width: 100%; font-size: 14px; }
th, td { text-align: left; padding: 6px 8px; border-bottom: 1px solid #e5e7eb; }
td.num { text-align: right; }
tr.critical td:first-child { border-left: 4px solid #d62728; }
tr.warning td:first-child { border-left: 4px solid #ff7f0e; }
p.ok { color: #2ca02c; font-weight: 600; }
.cards { display: flex; gap: 12px; flex-wrap: wrap; }
.card { background: #fff; border-radius: 6px; padding: 12px 16px; min-width: 160px;
        box-shadow: 0 1px 2px rgba(0,0,0,.08); }
.card .value { font-size: 26px; font-weight: 700; }
.card .label { font-size: 13px; color: #555; }
.card.warn .value { color: #d62728; }
/* Fixed tracks: plotly sizes each chart to its cell once, as the page is parsed. */
.grid { display: grid; grid-template-columns: repeat(2, minmax(0, 1fr)); gap: 16px; }
@media (max-width: 1100px) { .grid { grid-template-columns: minmax(0, 1fr); } }
.grid section { margin-bottom: 0; min-width: 0; }
"""


def render_dashboard(conn: psycopg.Connection, *, days: int = 7) -> str:
    """The dashboard as one self-contained HTML document (no network requests)."""
    meta = _rows(conn, META_SQL)[0]
    per_hour = api.refresh_metrics(conn, days=days, by_hour=True)
    hourly = _per_hour(per_hour, "outcome")
    failures = _per_hour([r for r in per_hour if r["outcome"] == "FAILED"], "reason")
    forecast = api.expiry_forecast(conn)
    tenants = api.tenant_usage(conn)
    alerts = fetch_alerts(conn)

    since_24h = meta["generated_at"].timestamp() - 86400
    last_24h = [r for r in hourly if r["hour"].timestamp() >= since_24h]
    failed_24h = sum(r["attempts"] for r in last_24h if r["outcome"] == "FAILED")
    no_path_7d = sum(r["without_refresh_path"] for r in forecast if r["days_ahead"] < 7)
    cards = "".join([
        _card("live tokens", sum(r["live_tokens"] for r in tenants)),
        _card("idle tokens", sum(r["idle_tokens"] for r in tenants)),
        _card("refreshes, last 24 h", sum(r["attempts"] for r in last_24h)),
        _card("failed refreshes, last 24 h", failed_24h, warn=failed_24h > 0),
        _card("expiring in 7 days with no refresh path", no_path_7d, warn=no_path_7d > 0),
        _card("open alerts", len(alerts), warn=bool(alerts)),
    ])

    end = meta["generated_at"] + timedelta(hours=1)
    start = end - timedelta(days=days, hours=1)
    charts = [
        ("chart-refreshes", refreshes_chart(hourly, start, end)),
        ("chart-failures", failures_chart(failures, start, end)),
        ("chart-forecast", forecast_chart(forecast)),
        ("chart-requests", requests_chart(tenants)),
        ("chart-idle", idle_chart(tenants)),
    ]
    config = {"displaylogo": False, "responsive": True}
    chart_html = "".join(
        "<section>" + fig.to_html(full_html=False, include_plotlyjs=False, div_id=div_id,
                                  config=config) + "</section>"
        for div_id, fig in charts)
    more = (f" (the {MAX_TENANTS} busiest of {len(tenants)} tenants are charted)"
            if len(tenants) > MAX_TENANTS else "")
    generated = _utc(meta["generated_at"]).isoformat(sep=" ", timespec="seconds")

    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>pyvault-tokens dashboard, {html.escape(generated)} UTC</title>
<style>{CSS}</style>
<script>{get_plotlyjs()}</script>
</head>
<body>
<header>
<h1>pyvault-tokens: token refresh dashboard</h1>
<p>Database <b>{html.escape(meta["database_name"])}</b>, generated
<time datetime="{html.escape(meta["generated_at"].isoformat())}">{html.escape(generated)}
UTC</time>. A snapshot: regenerate it for newer data.</p>
</header>
<main>
<section id="alerts"><h2>Open alerts</h2>{_alerts_html(alerts)}</section>
<section><div class="cards">{cards}</div></section>
<div class="grid">{chart_html}</div>
<p>Refreshes and failures cover the last {days} days.
Usage counts recorded uses (at most one per token per debounce interval){html.escape(more)}.
Alert thresholds are in <code>auth.monitoring_config</code>.</p>
</main>
</body>
</html>
"""
