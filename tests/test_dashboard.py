"""The HTML dashboard, rendered from a real database and opened in real headless Chromium.

Chromium runs behind a "canary" proxy: every request it makes, to any host, arrives at a
socket of this test, which records it and answers nothing. Name resolution is switched
off too. The dashboard must render completely with no request from the page.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import threading
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path

import psycopg
import pytest
from PIL import Image

from pyvault_tokens.dashboard import OUTCOME_COLOURS, WITH_PATH, WITHOUT_PATH, render_dashboard
from tests.tokens import make_token

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CHARTS = ["chart-refreshes", "chart-failures", "chart-forecast", "chart-requests", "chart-idle"]
# A tenant name that would break out of the page's <script> if data were not escaped, and
# would then fetch from the network.
HOSTILE_TENANT = '</script><img src="https://evil.example/x.png"><b>'
# Chromium's own service endpoints (Debian's build enables extension updates and sign-in
# checks); never anything the page asks for.
CHROMIUM_SERVICE_HOSTS = {
    "update.googleapis.com", "accounts.google.com", "clients2.google.com",
    "clients2.googleusercontent.com", "redirector.gvt1.com", "edgedl.me.gvt1.com",
    "optimizationguide-pa.googleapis.com", "safebrowsingohttpgateway.googleapis.com",
    "content-autofill.googleapis.com",
}


@dataclass
class CanaryProxy:
    """An HTTP proxy that records the first line of every request and refuses them all."""

    requests: list[str] = field(default_factory=list)

    def __enter__(self) -> CanaryProxy:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(32)
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()
        return self

    def _serve(self) -> None:
        while True:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            with client:
                client.settimeout(5)
                try:
                    line = client.recv(8192).split(b"\r\n", 1)[0].decode()
                    # A connection closed before it sent a byte (Chromium opens spare
                    # sockets to its proxy ahead of need) asked for nothing.
                    if line:
                        self.requests.append(line)
                except OSError as exc:
                    self.requests.append(f"<unreadable request: {exc}>")

    def __exit__(self, *exc) -> None:
        self.sock.close()

    def page_requests(self) -> list[str]:
        """The requests that are not Chromium's own background traffic."""
        return [r for r in self.requests if _host(r) not in CHROMIUM_SERVICE_HOSTS]


def _host(request_line: str) -> str:
    # "CONNECT host:443 HTTP/1.1" or "GET http://host/path HTTP/1.1"
    parts = request_line.split()
    if len(parts) < 2:
        return ""
    target = parts[1].split("://", 1)[-1]
    return target.split("/", 1)[0].rsplit(":", 1)[0]


@dataclass
class Rendered:
    dom: str
    screenshot: Path
    requests: list[str]
    all_requests: list[str]


def open_in_chromium(page: Path, workdir: Path) -> Rendered:
    """Load a page offline in headless Chromium: its DOM after scripts, and a screenshot."""
    if not Path(CHROMIUM).is_file():
        pytest.fail(f"headless Chromium is needed for the dashboard tests and {CHROMIUM} is "
                    "missing: run `apt-get install chromium` (tools/install-debian-packages) "
                    "or point $CHROMIUM at a Chromium binary")
    png = workdir / f"{page.stem}.png"
    profile = workdir / f"{page.stem}-profile"
    with CanaryProxy() as proxy:
        result = subprocess.run(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
             "--no-first-run", "--disable-background-networking", "--disable-component-update",
             "--disable-sync", "--disable-extensions", "--disable-default-apps",
             "--disable-features=NetworkTimeServiceQuerying,OptimizationHints,Translate",
             f"--user-data-dir={profile}",
             f"--proxy-server=http://127.0.0.1:{proxy.port}", "--proxy-bypass-list=<-loopback>",
             "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
             "--window-size=1400,2000", f"--screenshot={png}", "--dump-dom",
             page.resolve().as_uri()],
            capture_output=True, text=True, timeout=180,
            env={**os.environ, "HOME": str(workdir), "DBUS_SESSION_BUS_ADDRESS": "disabled:"},
        )
        assert result.returncode == 0, result.stderr[-3000:]
        return Rendered(result.stdout, png, proxy.page_requests(), list(proxy.requests))


@pytest.fixture(scope="module")
def page(db_url: str, tmp_path_factory) -> Path:
    """A dashboard over refreshes, failures, three tenants, a held token and some use."""
    with psycopg.connect(db_url, autocommit=True) as conn:
        for tenant, n in (("acme", 4), ("globex", 2), (HOSTILE_TENANT, 1)):
            tokens = [make_token(conn, "3 days", tenant=tenant, user=f"u{i}") for i in range(n)]
            conn.execute("SELECT * FROM auth.validate_and_refresh_api_token(%s)", (tokens[0],))
        busy = make_token(conn, "20 days", tenant="globex", user="busy")
        conn.execute("SELECT * FROM auth.validate_and_refresh_api_token(%s)", (busy,))
        held = make_token(conn, "10 days", tenant="acme", user="held")
        conn.execute("SELECT auth.record_refresher_heartbeat('svc', %s)", ([held],))
        conn.execute(
            "INSERT INTO auth.token_refresh_event"
            " (occurred_at, api_token_hk, tenant_hk, refresh_trigger, outcome, reason)"
            " SELECT now() - make_interval(hours => (g %% 4) * 3), b.api_token_hk, b.tenant_hk,"
            " 'BATCH', 'FAILED', CASE WHEN g %% 2 = 0 THEN 'LOCK_TIMEOUT' ELSE 'TEST' END"
            " FROM generate_series(1, 12) AS g, auth.api_token_bridge AS b"
            " WHERE b.token_hash = sha256(convert_to(%s, 'UTF8'))", (busy,))
        html = render_dashboard(conn)
    path = tmp_path_factory.mktemp("dashboard") / "dashboard.html"
    path.write_text(html, encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def rendered(page: Path) -> Rendered:
    return open_in_chromium(page, page.parent)


class _Refs(HTMLParser):
    """Every URL-bearing attribute and every tag name, outside script text."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[tuple[str, str, str]] = []
        self.tags: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        for name, value in attrs:
            if name in ("src", "href", "srcset", "action", "poster", "data", "formaction"):
                self.urls.append((tag, name, value or ""))


def test_the_page_is_one_self_contained_file(page: Path):
    html = page.read_text(encoding="utf-8")
    refs = _Refs()
    refs.feed(html)
    assert refs.urls == [], f"the page refers to other resources: {refs.urls}"
    assert "img" not in refs.tags and "link" not in refs.tags and "iframe" not in refs.tags
    assert refs.tags.count("script") >= 1 + len(CHARTS)
    assert "@import" not in html and "url(http" not in html
    assert len(html) > 1_000_000, "plotly.js is inline"
    assert HOSTILE_TENANT not in html, "tenant names cannot break out of the chart data"


def test_chromium_made_no_network_request(rendered: Rendered):
    assert rendered.requests == [], (
        f"the dashboard asked the network for {rendered.requests}")


def test_the_canary_catches_a_page_that_uses_the_network(tmp_path: Path):
    """The check above would see a request: a page with a remote script is caught."""
    page = tmp_path / "online.html"
    page.write_text('<html><body><script src="https://cdn.example.net/lib.js"></script>'
                    "online</body></html>", encoding="utf-8")
    online = open_in_chromium(page, tmp_path)
    assert any(_host(r) == "cdn.example.net" for r in online.requests), online.all_requests


def _chart_segments(dom: str) -> dict[str, str]:
    """The DOM of each chart: from its div to the next chart's."""
    segments = {}
    for i, chart in enumerate(CHARTS):
        start = dom.index(f'id="{chart}"')
        end = dom.index(f'id="{CHARTS[i + 1]}"') if i + 1 < len(CHARTS) else len(dom)
        segments[chart] = dom[start:end]
    return segments


def test_every_chart_was_drawn(rendered: Rendered):
    segments = _chart_segments(rendered.dom)
    for chart, dom in segments.items():
        assert 'class="main-svg"' in dom, f"{chart} was not drawn"
    # Bars are drawn as path.point elements inside the bar traces.
    for chart in ("chart-refreshes", "chart-failures", "chart-forecast", "chart-requests",
                  "chart-idle"):
        assert 'class="trace bars"' in segments[chart], f"{chart} has no bars"
        assert 'class="point"' in segments[chart], f"{chart} drew no bar"
    # Legends name the outcomes and reasons that occurred.
    for name in ("ROTATED", "FAILED"):
        assert f">{name}<" in segments["chart-refreshes"]
    for name in ("LOCK_TIMEOUT", "TEST"):
        assert f">{name}<" in segments["chart-failures"]
    # The hostile tenant name is shown as text, not interpreted.
    assert "evil.example" in segments["chart-idle"]
    assert not re.search(r"<img[\s>]", rendered.dom)


def test_the_screenshot_shows_the_charts(rendered: Rendered):
    image = Image.open(rendered.screenshot).convert("RGB")
    assert image.size == (1400, 2000)
    total = image.size[0] * image.size[1]
    colours = dict((colour, count) for count, colour in image.getcolors(total))
    assert len(colours) > 100, f"the page looks blank: {len(colours)} colours"
    light = sum(count for colour, count in colours.items() if min(colour) >= 240)
    assert light < 0.95 * total, "the page is nearly all white"

    def hex_rgb(colour: str) -> tuple[int, int, int]:
        return tuple(int(colour[i:i + 2], 16) for i in (1, 3, 5))

    counts = {name: colours.get(hex_rgb(colour), 0) for name, colour in (
        ("ROTATED", OUTCOME_COLOURS["ROTATED"]), ("FAILED", OUTCOME_COLOURS["FAILED"]),
        ("with path", WITH_PATH), ("without path", WITHOUT_PATH))}
    # Bars fill solid areas in their colour (legend swatches alone are ~100 pixels).
    for name, count in counts.items():
        assert count > 150, f"no {name} bars in the screenshot: {counts}"


def test_header_and_alerts_table(page: Path):
    html = page.read_text(encoding="utf-8")
    assert "token refresh dashboard" in html
    assert "generated" in html and "UTC</time>" in html
    assert '<section id="alerts"><h2>Open alerts</h2><table>' in html
    # Failures in the last hour exceed the threshold; the batch job never ran.
    assert '<tr class="critical"><td>REFRESH_FAILURE_RATE</td>' in html
    assert '<tr class="warning"><td>BATCH_JOB_STALE</td>' in html
