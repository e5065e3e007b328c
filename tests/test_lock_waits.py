"""No call hangs on a lock, and every answer is right (issue 12), with real connections.

- A due token whose row another transaction holds (the seed's one-transaction batch)
  is answered valid with REFRESH_BUSY after the policy's refresh_lock_wait, not after
  that transaction commits.
- A revoke that commits while validate-and-refresh waits for the row is honoured.
- Callers inside REPEATABLE READ and SERIALIZABLE transactions get answers, never
  serialization errors; where a write cannot be made the refresh is deferred
  (REFRESH_DEFERRED_SNAPSHOT).
- Tokens the batch enqueued for ROTATE are extended once their type switches to EXTEND.
- The batch's dry run counts exactly what the real run then does.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import psycopg
import pytest

from tests.tokens import make_token, successors

VALIDATE_AND_REFRESH = ("SELECT is_valid, new_token, refresh_reason, message"
                        " FROM auth.validate_and_refresh_api_token(%s)")
# A statement that waited for the holder's commit would fail this, so no call can hang.
BOUND = "SET statement_timeout = '5s'"


def _policy(conn: psycopg.Connection, token_type: str, **settings: str) -> None:
    args = ", ".join(f"p_{k} => %({k})s" for k in settings)
    conn.execute(f"SELECT auth.set_refresh_policy(%(t)s, {args})", {"t": token_type, **settings})


def test_a_locked_due_token_is_answered_busy_within_the_lock_wait(conn, db_url):
    token = make_token(conn, expires_in="3 days", user="busy")
    with psycopg.connect(db_url) as holder, psycopg.connect(db_url, autocommit=True) as caller:
        holder.execute("SELECT * FROM auth.refresh_expiring_tokens_batch()")  # holds its rows
        caller.execute(BOUND)
        started = time.monotonic()
        row = caller.execute(VALIDATE_AND_REFRESH, (token,)).fetchone()
        waited = time.monotonic() - started
        holder.rollback()
    assert row[:3] == (True, None, "REFRESH_BUSY"), row
    assert waited < 5
    failed = conn.execute("SELECT count(*) FROM auth.token_refresh_event"
                          " WHERE outcome = 'FAILED'").fetchone()[0]
    assert failed == 0, "a busy row is not a failed refresh"
    again = conn.execute(VALIDATE_AND_REFRESH, (token,)).fetchone()
    assert again[0] is True and again[2] == "EXPIRING_SOON" and again[1], "the next use refreshes"


def test_a_revoke_committed_while_waiting_is_honoured(conn, db_url):
    token = make_token(conn, expires_in="3 days", user="revoked-while-waiting")
    _policy(conn, "PRODUCTION", refresh_lock_wait="10 seconds")
    try:
        with psycopg.connect(db_url) as admin:
            admin.execute("SELECT auth.revoke_api_token(%s, 'revoked while a call waits')",
                          (token,))
            result: list = []

            def call() -> None:
                with psycopg.connect(db_url, autocommit=True) as caller:
                    caller.execute(BOUND)
                    result.append(caller.execute(VALIDATE_AND_REFRESH, (token,)).fetchone())

            waiter = threading.Thread(target=call)
            waiter.start()
            deadline = time.monotonic() + 5
            waiting = 0
            while not waiting:  # until the caller waits for the row lock
                assert time.monotonic() < deadline, "the call never waited for the row"
                time.sleep(0.02)
                waiting = conn.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                    " AND query LIKE '%%validate_and_refresh%%'").fetchone()[0]
            admin.commit()
            waiter.join(10)
    finally:
        _policy(conn, "PRODUCTION", refresh_lock_wait="100 milliseconds")
    assert result == [(False, None, "TOKEN_INVALID", "Token has been revoked")]


def _in_isolation(db_url: str, level: str, statement: str, token: str, barrier) -> tuple:
    with psycopg.connect(db_url) as c:
        c.execute(f"SET TRANSACTION ISOLATION LEVEL {level}")
        c.execute("SELECT 1")  # the snapshot is taken here, before the others write
        barrier.wait(10)
        row = c.execute(statement, (token,)).fetchone()
        c.commit()
        return row


@pytest.mark.parametrize("level", ["REPEATABLE READ", "SERIALIZABLE"])
def test_concurrent_validations_inside_snapshots_answer_without_errors(conn, db_url, level):
    token = make_token(conn, user=f"snapshot-{level}")
    _policy(conn, "PRODUCTION", usage_debounce="0 seconds")
    try:
        barrier = threading.Barrier(20)
        with ThreadPoolExecutor(20) as pool:
            rows = list(pool.map(lambda _: _in_isolation(
                db_url, level, "SELECT is_valid FROM auth.validate_production_api_token(%s)",
                token, barrier), range(20)))
    finally:
        _policy(conn, "PRODUCTION", usage_debounce="60 seconds")
    assert rows == [(True,)] * 20


def test_concurrent_refreshes_inside_repeatable_read_give_one_successor(conn, db_url):
    token = make_token(conn, user="snapshot-refresh")
    barrier = threading.Barrier(10)
    statement = ("SELECT success, new_token, refresh_reason FROM"
                 " auth.refresh_production_token_enhanced(%s, p_force => true)")
    with ThreadPoolExecutor(10) as pool:
        rows = list(pool.map(lambda _: _in_isolation(db_url, "REPEATABLE READ", statement,
                                                     token, barrier), range(10)))
    reasons = sorted(r[2] for r in rows)
    assert reasons.count("FORCED") == 1, reasons
    assert set(reasons) <= {"FORCED", "ALREADY_REFRESHED", "REFRESH_DEFERRED_SNAPSHOT"}
    assert successors(conn, token) == 1
    new_tokens = {r[1] for r in rows if r[1]}
    assert len(new_tokens) == 1, "every caller that got a token got the same one"


def test_serializable_defers_a_due_refresh_and_writes_nothing(conn, db_url):
    token = make_token(conn, expires_in="3 days", user="serializable-due")
    before = conn.execute("SELECT tests.row_counts()").fetchone()[0]
    with psycopg.connect(db_url) as c:
        c.execute("SET TRANSACTION ISOLATION LEVEL SERIALIZABLE")
        row = c.execute(VALIDATE_AND_REFRESH, (token,)).fetchone()
        c.commit()
    assert row[:3] == (True, None, "REFRESH_DEFERRED_SNAPSHOT")
    assert conn.execute("SELECT tests.row_counts()").fetchone()[0] == before


def test_enqueued_rotate_tokens_are_extended_after_a_switch_to_extend(conn):
    token = make_token(conn, expires_in="3 days", token_type="API", user="stranded")
    hk = "(tests.bridge(%s)).api_token_hk"
    conn.execute("SELECT * FROM auth.refresh_expiring_tokens_batch()")
    assert conn.execute(f"SELECT count(*) FROM auth.token_refresh_outbox WHERE api_token_hk = {hk}"
                        " AND processed_at IS NULL", (token,)).fetchone()[0] == 1
    _policy(conn, "API", strategy="EXTEND")
    try:
        outbox = conn.execute(f"SELECT outcome FROM auth.token_refresh_outbox WHERE api_token_hk"
                              f" = {hk}", (token,)).fetchall()
        assert outbox == [("POLICY_CHANGED",)]
        conn.execute("SELECT * FROM auth.refresh_expiring_tokens_batch()")
        expires = conn.execute("SELECT expires_at > now() + interval '20 days' FROM"
                               " auth.validate_production_api_token(%s)", (token,)).fetchone()[0]
        assert expires is True, "the next batch run extended it"
    finally:
        _policy(conn, "API", strategy="ROTATE")


def test_the_dry_run_counts_exactly_what_the_run_does(conn):
    conn.execute("SELECT tests.bulk_tokens(4, 'API_KEY', '2 days', 'dry-extend')")
    conn.execute("SELECT tests.bulk_tokens(3, 'PRODUCTION', '2 days', 'dry-rotate')")
    # One EXTEND token at its family's cap: the run cannot extend it (a failure).
    conn.execute("UPDATE auth.api_token_bridge SET family_started_at = expires_at - interval"
                 " '365 days' WHERE token_hash = (SELECT token_hash FROM auth.api_token_bridge"
                 " WHERE user_hk = auth.register_user(auth.register_tenant('bulk'), 'dry-extend')"
                 " LIMIT 1)")
    counts = ("SELECT tokens_found, tokens_failed, (details -> 'counts') AS counts"
              " FROM auth.refresh_expiring_tokens_batch(p_dry_run => %s)")
    dry = conn.execute(counts, (True,)).fetchone()
    real = conn.execute(counts, (False,)).fetchone()
    assert dry == real
    assert dry[1] >= 1 and dry[2]["extended"] >= 3 and dry[2]["enqueued"] >= 3
