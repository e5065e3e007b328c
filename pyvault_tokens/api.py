"""Thin Python calls of the SQL API: one SQL call each, named arguments, explicit casts.

Every function takes a psycopg connection, so callers compose their own transactions.
Rows come back as dicts, read by column name.
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg.rows import dict_row

Row = dict[str, Any]


def _one(conn: psycopg.Connection, sql: str, params: dict[str, Any]) -> Row:
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(sql, params)
        row = cur.fetchone()
    assert row is not None
    return row


def _all(conn: psycopg.Connection, sql: str, params: dict[str, Any]) -> list[Row]:
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(sql, params)
        return cur.fetchall()


def register_user(conn: psycopg.Connection, tenant: str, user: str) -> Row:
    """Register (idempotently) a tenant and a user by name; returns both hash keys."""
    return _one(
        conn,
        "SELECT t.hk AS tenant_hk,"
        " auth.register_user(p_tenant_hk => t.hk, p_user_bk => %(user)s::text) AS user_hk"
        " FROM (SELECT auth.register_tenant(p_tenant_bk => %(tenant)s::text) AS hk) AS t",
        {"tenant": tenant, "user": user},
    )


def issue(conn: psycopg.Connection, user_hk: bytes, tenant_hk: bytes, *,
          scope: list[str] | None = None, token_type: str = "PRODUCTION",
          expires_in: str | None = None) -> Row:
    return _one(
        conn,
        "SELECT * FROM auth.generate_production_api_token("
        "p_user_hk => %(user_hk)s::bytea, p_tenant_hk => %(tenant_hk)s::bytea,"
        " p_scope => %(scope)s::text[], p_token_type => %(token_type)s::text,"
        " p_expires_in => %(expires_in)s::interval)",
        {"user_hk": user_hk, "tenant_hk": tenant_hk, "scope": scope or ["api:read"],
         "token_type": token_type, "expires_in": expires_in},
    )


def validate(conn: psycopg.Connection, token: str, scope: str = "api:read") -> Row:
    return _one(
        conn,
        "SELECT * FROM auth.validate_production_api_token("
        "p_token => %(token)s::text, p_required_scope => %(scope)s::text)",
        {"token": token, "scope": scope},
    )


def validate_and_refresh(conn: psycopg.Connection, token: str, scope: str = "api:read") -> Row:
    return _one(
        conn,
        "SELECT * FROM auth.validate_and_refresh_api_token("
        "p_token => %(token)s::text, p_required_scope => %(scope)s::text)",
        {"token": token, "scope": scope},
    )


REFRESH_SQL = (
    "SELECT * FROM auth.refresh_production_token_enhanced("
    "p_token => %(token)s::text, p_threshold_days => %(days)s::integer,"
    " p_force => %(force)s::boolean, p_trigger => %(trigger)s::text)"
)
STATUS_SQL = "SELECT * FROM auth.get_token_refresh_status(p_token => %(token)s::text)"


def refresh(conn: psycopg.Connection, token: str, *, threshold_days: int | None = None,
            force: bool = False, trigger: str | None = None) -> Row:
    return _one(conn, REFRESH_SQL,
                {"token": token, "days": threshold_days, "force": force, "trigger": trigger})


def status(conn: psycopg.Connection, token: str) -> Row:
    return _one(conn, STATUS_SQL, {"token": token})


def refresh_batch(conn: psycopg.Connection, *, batch_size: int = 1000,
                  max_tokens: int | None = None, threshold_days: int | None = None,
                  dry_run: bool = False) -> Row:
    return _one(
        conn,
        "SELECT * FROM auth.refresh_expiring_tokens_batch("
        "p_threshold_days => %(days)s::integer, p_batch_size => %(size)s::integer,"
        " p_max_tokens => %(max)s::integer, p_dry_run => %(dry)s::boolean)",
        {"days": threshold_days, "size": batch_size, "max": max_tokens, "dry": dry_run},
    )


def cron_jobs(conn: psycopg.Connection, schedule: str, job_name: str) -> list[Row]:
    return _all(
        conn,
        "SELECT * FROM auth.token_refresh_cron_jobs("
        "p_schedule => %(schedule)s::text, p_job_name => %(name)s::text)",
        {"schedule": schedule, "name": job_name},
    )


def revoke(conn: psycopg.Connection, token: str, reason: str = "revoked by administrator") -> bool:
    row = _one(
        conn,
        "SELECT auth.revoke_api_token(p_token => %(token)s::text, p_reason => %(reason)s::text)"
        " AS revoked",
        {"token": token, "reason": reason},
    )
    return bool(row["revoked"])


def diagnose(conn: psycopg.Connection, token: str, *, apply: bool = False) -> list[Row]:
    return _all(
        conn,
        "SELECT * FROM auth.test_token_refresh_system("
        "p_token => %(token)s::text, p_apply => %(apply)s::boolean)",
        {"token": token, "apply": apply},
    )
