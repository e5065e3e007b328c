"""The normalised schema of a migrated database: pg_dump of schema auth, without the
lines that vary between runs (comments with versions, SET lines), owners or blank lines.

tests/expected-schema.txt holds it for the current migrations plus sql/, and
tests/test_schema_files.py fails when they produce anything else. After a deliberate
change, regenerate it with `make schema-dump` and review the diff like code.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from pyvault_tokens.embedded import PG_BIN

EXPECTED = Path(__file__).parent / "expected-schema.txt"


def dump_schema(url: str) -> str:
    out = subprocess.run(
        [str(PG_BIN / "pg_dump"), "--schema-only", "--schema=auth", "--no-owner", url],
        capture_output=True, text=True, check=True,
    ).stdout
    # \restrict and \unrestrict carry a random key per dump (pg_dump 15.14 and later).
    varying = ("--", "SET ", "SELECT pg_catalog.set_config", "\\restrict", "\\unrestrict")
    kept = [line.rstrip() for line in out.splitlines()
            if line.strip() and not line.startswith(varying)]
    return "\n".join(kept) + "\n"
