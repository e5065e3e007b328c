"""Helpers for Python tests: issue tokens and read state through real connections."""

from __future__ import annotations

import psycopg


def make_token(conn: psycopg.Connection, expires_in: str = "30 days",
               token_type: str = "PRODUCTION", scope: str = "{api:read}",
               tenant: str = "acme", user: str = "alice") -> str:
    row = conn.execute(
        "SELECT tests.make_token(%s::interval, %s, %s::text[], %s, %s)",
        (expires_in, token_type, scope, tenant, user),
    ).fetchone()
    return row[0]


def successors(conn: psycopg.Connection, token: str) -> int:
    return conn.execute(
        "SELECT count(*) FROM auth.token_rotation_l AS l"
        " WHERE l.predecessor_hk = (tests.bridge(%s)).api_token_hk",
        (token,),
    ).fetchone()[0]


def assert_one_successor(results: list, retry_conn: psycopg.Connection, token: str) -> str:
    """Concurrent validate-and-refresh calls of one due token: all valid, one rotation,
    every caller that got a new token got the same one. A caller that waited longer than
    refresh_lock_wait for the rotating caller's row answers REFRESH_BUSY (valid, no new
    token yet), and its retry gets that successor. Returns the successor.
    results and retry_conn use dict rows."""
    assert all(r["is_valid"] for r in results), "a call was refused"
    reasons = sorted(r["refresh_reason"] for r in results)
    assert reasons.count("EXPIRING_SOON") == 1, reasons
    assert set(reasons) <= {"EXPIRING_SOON", "ALREADY_REFRESHED", "REFRESH_BUSY"}, reasons
    assert all(r["was_refreshed"] == (r["refresh_reason"] != "REFRESH_BUSY") for r in results)
    new_tokens = {r["new_token"] for r in results if r["was_refreshed"]}
    assert len(new_tokens) == 1 and None not in new_tokens, new_tokens
    assert len({r["expires_at"] for r in results if r["was_refreshed"]}) == 1, "one expiry"
    successor = next(iter(new_tokens))
    retried = retry_conn.execute(
        "SELECT refresh_reason, new_token FROM auth.validate_and_refresh_api_token(%s)",
        (token,)).fetchone()
    assert (retried["refresh_reason"], retried["new_token"]) == ("ALREADY_REFRESHED", successor)
    return successor

