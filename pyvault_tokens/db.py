"""Small query helpers for the SQL that is not the auth API (pg_cron in the cron
database, the migrator's bookkeeping): every ``auth.*`` call is in ``pyvault_tokens.api``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import psycopg
from psycopg.rows import tuple_row

__all__ = ["scalar"]


def scalar(conn: psycopg.Connection[Any], sql: str,
           params: Mapping[str, Any] | Sequence[Any] | None = None) -> Any:
    """The first column of the one row that ``sql`` always returns (a SELECT without FROM,
    an aggregate), whatever the connection's row factory."""
    with conn.cursor(row_factory=tuple_row) as cur:
        cur.execute(sql, params)
        row = cur.fetchone()
    if row is None:
        raise RuntimeError(f"no row from {sql[:60]!r}")
    return row[0]
