"""How tokens and durations are shown: never a whole token."""

from __future__ import annotations

import re

TOKEN_PREFIX = "ovt_prod_"
TOKEN_LENGTH = len(TOKEN_PREFIX) + 64
_SHOWN = len(TOKEN_PREFIX) + 4
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


def ttl_to_interval(ttl: str) -> str:
    """'30d' -> '30 days'. Raises ValueError on anything else."""
    m = _TTL.match(ttl)
    if not m:
        raise ValueError(f"not a duration: {ttl!r} (use e.g. 30d, 12h, 90m, 45s, 2w)")
    return f"{m.group(1)} {_UNITS[m.group(2)]}"
