"""Concurrency with real connections: many callers, one token, one successor."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import psycopg
import pytest
from psycopg.rows import dict_row

from tests.tokens import assert_one_successor, make_token, successors

CALLERS = 32
ROUNDS = 20


@pytest.fixture(scope="module")
def pool_conns(db_url):
    conns = [psycopg.connect(db_url, autocommit=True, row_factory=dict_row) for _ in range(CALLERS)]
    yield conns
    for c in conns:
        c.close()


def _validate_all_at_once(conns, token):
    barrier = threading.Barrier(len(conns))

    def call(conn):
        barrier.wait()
        return conn.execute(
            "SELECT * FROM auth.validate_and_refresh_api_token(%s, 'api:read')", (token,)
        ).fetchone()

    with ThreadPoolExecutor(max_workers=len(conns)) as ex:
        return list(ex.map(call, conns))


def test_32_callers_on_one_near_expiry_token_get_one_successor(conn, pool_conns):
    for round_no in range(ROUNDS):
        token = make_token(conn, "3 days", user=f"round{round_no}")
        results = _validate_all_at_once(pool_conns, token)
        new = assert_one_successor(results, pool_conns[0], token)
        assert successors(conn, token) == 1
        assert conn.execute(
            "SELECT is_valid FROM auth.validate_production_api_token(%s)", (new,)
        ).fetchone()[0]


def test_reuse_revocation_is_committed_although_the_call_fails(conn, db_url):
    old = make_token(conn, "3 days", user="reuse")
    new = conn.execute("SELECT new_token FROM auth.validate_and_refresh_api_token(%s)",
                       (old,)).fetchone()[0]
    conn.execute("SELECT * FROM auth.validate_production_api_token(%s)", (new,))  # starts grace
    conn.execute("SELECT tests.advance_clock('2 minutes')")
    with psycopg.connect(db_url, autocommit=True) as attacker:
        row = attacker.execute(
            "SELECT is_valid, refresh_reason FROM auth.validate_and_refresh_api_token(%s)", (old,)
        ).fetchone()
    assert row == (False, "REUSE_DETECTED")
    with psycopg.connect(db_url, autocommit=True) as other:
        revoked = other.execute(
            "SELECT (tests.bridge(%s)).is_revoked, (tests.bridge(%s)).is_revoked", (old, new)
        ).fetchone()
        events = other.execute(
            "SELECT count(*) FROM auth.security_event WHERE event_type = 'TOKEN_REUSE'"
        ).fetchone()[0]
    assert revoked == (True, True)
    assert events == 1


def test_a_locked_row_leaves_the_token_valid_with_refresh_busy(conn, db_url):
    token = make_token(conn, "3 days", user="locked")
    with psycopg.connect(db_url) as holder:  # a transaction holding the row lock
        holder.execute("SELECT 1 FROM auth.api_token_bridge AS b"
                       " WHERE b.token_hash = sha256(convert_to(%s, 'UTF8')) FOR UPDATE", (token,))
        with psycopg.connect(db_url, autocommit=True) as caller:
            row = caller.execute(
                "SELECT is_valid, was_refreshed, new_token, refresh_reason, message"
                " FROM auth.validate_and_refresh_api_token(%s)", (token,)
            ).fetchone()
        holder.rollback()
    assert row[0] is True and row[1] is False and row[2] is None
    assert row[3] == "REFRESH_BUSY"
    assert "locked by another transaction" in row[4]
    assert conn.execute("SELECT count(*) FROM auth.token_refresh_event WHERE outcome = 'FAILED'"
                        ).fetchone()[0] == 0
    assert successors(conn, token) == 0


def test_a_refresh_that_fails_leaves_the_token_valid_with_refresh_failed(conn):
    token = make_token(conn, "3 days", user="failing")
    # Any error inside the refresh: here the rotation's own event row is refused.
    conn.execute("ALTER TABLE auth.token_refresh_event ADD CONSTRAINT test_no_rotation"
                 " CHECK (outcome <> 'ROTATED') NOT VALID")
    try:
        row = conn.execute("SELECT is_valid, was_refreshed, new_token, refresh_reason, message"
                           " FROM auth.validate_and_refresh_api_token(%s)", (token,)).fetchone()
    finally:
        conn.execute("ALTER TABLE auth.token_refresh_event DROP CONSTRAINT test_no_rotation")
    assert row[:4] == (True, False, None, "REFRESH_FAILED")
    assert "test_no_rotation" in row[4]
    failed = conn.execute(
        "SELECT detail->>'sqlstate' FROM auth.token_refresh_event WHERE outcome = 'FAILED'"
    ).fetchall()
    assert failed == [("23514",)]
    assert successors(conn, token) == 0


def test_refresh_and_revoke_race_ends_revoked_with_no_live_successor(conn, db_url):
    for i in range(10):
        token = make_token(conn, "3 days", user=f"race{i}")
        barrier = threading.Barrier(2)

        def refresh(token=token, barrier=barrier):
            with psycopg.connect(db_url, autocommit=True) as c:
                barrier.wait()
                return c.execute("SELECT * FROM auth.refresh_production_token_enhanced(%s)",
                                 (token,)).fetchone()

        def revoke(token=token, barrier=barrier):
            with psycopg.connect(db_url, autocommit=True) as c:
                barrier.wait()
                return c.execute("SELECT auth.revoke_api_token(%s)", (token,)).fetchone()

        with ThreadPoolExecutor(max_workers=2) as ex:
            f1, f2 = ex.submit(refresh), ex.submit(revoke)
            f1.result(), f2.result()
        live = conn.execute(
            "SELECT count(*) FROM auth.api_token_bridge AS b"
            " WHERE b.family_hk = (tests.bridge(%s)).family_hk AND NOT b.is_revoked", (token,)
        ).fetchone()[0]
        assert live == 0, f"attempt {i}: {live} live token(s) in the family"
