"""Run plpgsql_check over every PL/pgSQL function of ours on a throwaway cluster.

Exits non-zero on any error or warning, printing each finding with its function.
"""

from __future__ import annotations

import sys

import psycopg

from pyvault_tokens.embedded import start_cluster
from pyvault_tokens.migrate import migrate

CHECK = """
SELECT p.oid::regprocedure::text AS function, c.level, c.message, c.lineno, c.statement,
       c.hint
FROM pg_catalog.pg_proc AS p
INNER JOIN pg_catalog.pg_language AS l ON p.prolang = l.oid
LEFT JOIN pg_catalog.pg_trigger AS t ON t.tgfoid = p.oid
CROSS JOIN LATERAL plpgsql_check_function_tb(
    p.oid, coalesce(t.tgrelid, 0), fatal_errors => false,
    performance_warnings => true, security_warnings => true
) AS c
WHERE l.lanname = 'plpgsql'
  AND p.pronamespace::regnamespace::text IN ('auth', 'util')
ORDER BY 1, c.lineno
"""


def main() -> int:
    pg = start_cluster()
    try:
        # The cron database, so that pg_cron's tables exist for the functions that use them.
        url = pg.url(database="postgres")
        migrate(url)
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("CREATE EXTENSION IF NOT EXISTS pg_cron")
            conn.execute("CREATE EXTENSION plpgsql_check")
            findings = conn.execute(CHECK).fetchall()
            checked = conn.execute(
                "SELECT count(*) FROM pg_proc AS p JOIN pg_language AS l ON p.prolang = l.oid"
                " WHERE l.lanname = 'plpgsql'"
                " AND p.pronamespace::regnamespace::text IN ('auth', 'util')"
            ).fetchone()[0]
    finally:
        pg.stop()
    for function, level, message, lineno, statement, hint in findings:
        print(f"{function}:{lineno or '-'}: {level}: {message}"
              + (f" [{statement}]" if statement else "") + (f" hint: {hint}" if hint else ""))
    print(f"plpgsql_check: {checked} functions, {len(findings)} findings")
    return 1 if findings else 0


if __name__ == "__main__":
    sys.exit(main())
