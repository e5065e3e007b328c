"""A year in production, compressed (issue 12): the server's clock moves day by day.

A cluster of its own runs on libfaketime's clock. Every simulated day each client
validates its token once and switches to the new token whenever one comes back (as the
middlewares' clients do); then the batch job and the lifecycle pruning run, as pg_cron
would run them, and every seventh day a plain VACUUM. Over 200 days a 30-day PRODUCTION
token rotates 8 times. Checked:

- every token a client holds validates, every day;
- a client that kept an old generation is refused with REUSE_DETECTED, and its family is
  revoked, long after that generation was spent;
- storage per live token after 200 days is at most 2.5 times its day-one figure, and the
  bridge (the index every validation probes) holds the live tokens only.

Validation speed over the same days is a benchmark (make bench), not a test.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import psycopg
import pytest

from pyvault_tokens.embedded import start_cluster
from pyvault_tokens.migrate import migrate
from tests.profile import profile

CLIENTS = profile(200, 1000)
DAYS = 200
STORAGE = """
SELECT sum(pg_total_relation_size(c.oid))::bigint
FROM pg_class AS c WHERE c.relnamespace = 'auth'::regnamespace AND c.relkind = 'r'
"""
LIVE = ("SELECT count(*) FROM auth.api_token_bridge"
        " WHERE successor_hk IS NULL AND NOT is_revoked AND valid_until > now()")
USE_ALL = """
SELECT t.i, v.is_valid, v.new_token, v.refresh_reason
FROM unnest(%s::text[]) WITH ORDINALITY AS t (token, i)
CROSS JOIN LATERAL auth.validate_and_refresh_api_token(t.token, 'api:read') AS v
ORDER BY t.i
"""


@pytest.fixture(scope="module")
def clock_cluster():
    folder = Path(tempfile.mkdtemp(prefix="pyvault-clock-", dir="/tmp"))  # noqa: S108
    os.chmod(folder, 0o755)  # noqa: S103 - the server user reads the clock file in it
    clock = folder / "offset"
    clock.write_text("+0d\n")
    os.chmod(clock, 0o644)
    pg = start_cluster(clock_file=clock)
    try:
        url = pg.url(database="postgres")
        migrate(url)
        yield url, clock
    finally:
        pg.stop()


def _bytes_per_live_token(conn: psycopg.Connection) -> float:
    return conn.execute(STORAGE).fetchone()[0] / conn.execute(LIVE).fetchone()[0]


def test_two_hundred_days_of_daily_use(clock_cluster):
    url, clock = clock_cluster
    with psycopg.connect(url, autocommit=True) as c:
        tenant = c.execute("SELECT auth.register_tenant('lifecycle')").fetchone()[0]
        user = c.execute("SELECT auth.register_user(%s, 'daily')", (tenant,)).fetchone()[0]
        # Issued over the last 23 days, as a real population is: their refreshes are
        # spread over the days, not one cohort that doubles the live set on one day.
        tokens = [c.execute("SELECT token FROM auth.generate_production_api_token(%s, %s,"
                            " p_expires_in => make_interval(days => %s))",
                            (user, tenant, 8 + i % 23)).fetchone()[0]
                  for i in range(CLIENTS + 1)]
        # The last client keeps its first token aside once it has been rotated twice.
        kept_old: str | None = None
        rotations = 0
        sizes: dict[int, float] = {}
        for day in range(DAYS + 1):
            clock.write_text(f"+{day}d\n")
            rows = c.execute(USE_ALL, (tokens,)).fetchall()
            invalid = [(i, reason) for i, ok, _, reason in rows if not ok]
            assert invalid == [], f"day {day}: clients cut off: {invalid[:5]}"
            for i, _, new_token, _ in rows:
                if new_token is not None:
                    if i == CLIENTS + 1 and kept_old is None and rotations >= CLIENTS:
                        kept_old = tokens[i - 1]
                    tokens[i - 1] = new_token
                    rotations += 1
            c.execute("CALL auth.refresh_expiring_tokens_job()")
            c.execute("CALL auth.prune_token_history()")
            if day % 7 == 6:
                c.execute("VACUUM")
            if day in (0, 100, DAYS):
                c.execute("VACUUM")
                sizes[day] = _bytes_per_live_token(c)
        assert rotations >= 8 * (CLIENTS + 1), "each token rotated about every 23 days"
        bridge = c.execute("SELECT count(*) FROM auth.api_token_bridge").fetchone()[0]
        assert bridge <= 2 * (CLIENTS + 1), "the bridge holds live tokens (and some in grace)"
        assert sizes[DAYS] <= 2.5 * sizes[0], sizes
        print(f"bytes per live token: day 0 {sizes[0]:.0f}, day 100 {sizes[100]:.0f},"
              f" day {DAYS} {sizes[DAYS]:.0f}")

        assert kept_old is not None
        spent = c.execute("SELECT count(*) FROM auth.spent_token WHERE token_hash ="
                          " sha256(convert_to(%s, 'UTF8'))", (kept_old,)).fetchone()[0]
        assert spent == 1, "the old generation was moved out of the bridge"
        reuse = c.execute("SELECT is_valid, refresh_reason FROM"
                          " auth.validate_and_refresh_api_token(%s)", (kept_old,)).fetchone()
        assert reuse == (False, "REUSE_DETECTED")
        current = c.execute("SELECT is_valid, message FROM auth.validate_production_api_token(%s)",
                            (tokens[-1],)).fetchone()
        assert current == (False, "Token has been revoked"), "reuse revoked the family"
        others = c.execute(USE_ALL, (tokens[:-1],)).fetchall()
        assert all(ok for _, ok, _, _ in others), "the other families are untouched"
