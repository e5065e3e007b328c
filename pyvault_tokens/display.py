"""How tokens, times and diagnoses are shown: never a whole token.

The one home of the token format (``TOKEN_PREFIX``, ``looks_like_token``,
``is_well_formed_token``), of what a log line or a table may show of a token
(``token_prefix``), and of the time form the HTTP layer sends in ``X-Token-Expires``
(``rfc3339``). Imports nothing of the package, so every module may use it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console

__all__ = [
    "TOKEN_LENGTH",
    "TOKEN_PREFIX",
    "is_well_formed_token",
    "looks_like_token",
    "print_diagnosis",
    "redact_tokens",
    "rfc3339",
    "token_prefix",
    "ttl_to_interval",
]

TOKEN_PREFIX = "ovt_prod_"
TOKEN_LENGTH = len(TOKEN_PREFIX) + 64
_SHOWN = len(TOKEN_PREFIX) + 4
_HEX = frozenset("0123456789abcdef")
_TOKEN_ANYWHERE = re.compile(TOKEN_PREFIX + r"[0-9A-Za-z]{4}[0-9A-Za-z]*")
_TTL = re.compile(r"^\s*(\d+)\s*([smhdw])\s*$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def token_prefix(token: str | None) -> str:
    """At most the fixed prefix and 4 hex characters of a token; nothing of anything else."""
    if not token:
        return "-"
    if not token.startswith(TOKEN_PREFIX) or len(token) < TOKEN_LENGTH:
        return "(not a token)…"
    return token[:_SHOWN] + "…"


def looks_like_token(token: str | None) -> bool:
    """The cheap format check the SQL functions make first: length and prefix."""
    return (token is not None and len(token) == TOKEN_LENGTH
            and token.startswith(TOKEN_PREFIX) and token.isascii())


def is_well_formed_token(token: str | None) -> bool:
    """``ovt_prod_`` followed by 64 lower-case hex characters: the check that costs no query."""
    return (token is not None and looks_like_token(token)
            and _HEX.issuperset(token[len(TOKEN_PREFIX):]))


def redact_tokens(text: object) -> str | None:
    """Free text (an error message, say) with anything token-like cut to its prefix."""
    if text is None:
        return None
    return _TOKEN_ANYWHERE.sub(lambda m: token_prefix(m.group(0)), str(text))


def ttl_to_interval(ttl: str) -> str:
    """'30d' -> '30 days'. Raises ValueError on anything else."""
    m = _TTL.match(ttl)
    if not m:
        raise ValueError(f"not a duration: {ttl!r} (use e.g. 30d, 12h, 90m, 45s, 2w)")
    return f"{m.group(1)} {_UNITS[m.group(2)]}"


def rfc3339(value: datetime) -> str:
    """The form JavaScript's toISOString() gives: UTC, milliseconds, 'Z' (X-Token-Expires)."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


# The diagnostic's details that say nothing a person needs in the table.
_NOISE = {"updated_at", "token_type", "issued_at", "recommendation_reason", "message"}


def _brief(value: object) -> str:
    text = str(value)
    # ISO timestamps: to the second is enough for a person.
    if len(text) >= 19 and text[4] == "-" and text[10] == "T":
        return text[:19].replace("T", " ")
    return text


def print_diagnosis(rows: Iterable[Mapping[str, Any]], console: Console) -> None:
    """The rows of ``auth.diagnose_token_refresh_system`` as a table, one step a row."""
    from rich.table import Table

    table = Table(title="token refresh diagnostics")
    table.add_column("step", no_wrap=True)
    table.add_column("result")
    table.add_column("details", overflow="fold")
    for r in rows:
        style = "red" if r["result"].startswith("FAIL") else (
            "yellow" if r["result"].startswith("WARN") else "green")
        details = ", ".join(f"{k}={_brief(v)}" for k, v in (r["details"] or {}).items()
                            if v not in (None, [], {}) and k not in _NOISE)
        table.add_row(r["step"], f"[{style}]{r['result']}[/{style}]", details)
    console.print(table)
