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
