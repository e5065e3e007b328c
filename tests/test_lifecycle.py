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

import psycopg
import pytest

from bench.lifecycle import USE_ALL, clock_cluster, issue_tokens, live_days, storage
from pyvault_tokens.migrate import migrate
from tests.profile import profile

CLIENTS = profile(200, 1000)
DAYS = 200


@pytest.fixture(scope="module")
def clock_db():
    with clock_cluster() as (pg, clock):
        url = pg.url(database="postgres")
        migrate(url)
        yield url, clock


def test_two_hundred_days_of_daily_use(clock_db):
    url, clock = clock_db
    with psycopg.connect(url, autocommit=True) as c:
        tokens = issue_tokens(c, CLIENTS + 1)
        # The last client keeps its first token aside once it has been rotated twice.
        kept_old: str | None = None
        rotations = 0
        sizes: dict[int, float] = {}
        for day, uses in live_days(c, clock, tokens, DAYS):
            invalid = [(u.i, u.reason) for u in uses if not u.is_valid]
            assert invalid == [], f"day {day}: clients cut off: {invalid[:5]}"
            for u in uses:
                if u.new_token is not None:
                    if u.i == CLIENTS + 1 and kept_old is None and rotations >= CLIENTS:
                        kept_old = u.token
                    rotations += 1
            if day in (0, 100, DAYS):
                c.execute("VACUUM")
                size, live = storage(c)
                sizes[day] = size / live
        assert rotations >= 8 * (CLIENTS + 1), "each token rotated about every 23 days"
        bridge = c.execute("SELECT count(*) FROM auth.api_token_bridge").fetchone()[0]
        assert bridge <= 2 * (CLIENTS + 1), "the bridge holds live tokens (and some in grace)"
        assert sizes[DAYS] <= 2.5 * sizes[0], sizes
        print(f"bytes per live token: day 0 {sizes[0]:.0f}, day 100 {sizes[100]:.0f},"
              f" day {DAYS} {sizes[DAYS]:.0f}")

        assert kept_old is not None
        spent = c.execute("SELECT count(*) FROM auth.spent_token WHERE token_key ="
                          " auth._hash_key(sha256(convert_to(%s, 'UTF8')))",
                          (kept_old,)).fetchone()[0]
        assert spent == 1, "the old generation was moved out of the bridge"
        reuse = c.execute("SELECT is_valid, refresh_reason FROM"
                          " auth.validate_and_refresh_api_token(%s)", (kept_old,)).fetchone()
        assert reuse == (False, "REUSE_DETECTED")
        current = c.execute("SELECT is_valid, message FROM auth.validate_production_api_token(%s)",
                            (tokens[-1],)).fetchone()
        assert current == (False, "Token has been revoked"), "reuse revoked the family"
        others = c.execute(USE_ALL, (tokens[:-1],)).fetchall()
        assert all(ok for _, ok, _, _ in others), "the other families are untouched"
