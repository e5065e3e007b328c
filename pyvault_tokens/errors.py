"""What went wrong with the database, in one line, and what to do about it.

The one place where psycopg errors are classified (by SQLSTATE, or for a failed
connection by libpq's message, which carries no SQLSTATE), for the command line and for
the refresher service alike. The CLI's exit codes:

- 1: a check failed (an invalid token, a failed diagnostic step, nothing revoked);
- 2: usage or configuration: a bad URL, a refused login, a database that is not
  migrated, a login without its pyvault role, a file that cannot be read or written;
- 3: the database is unavailable (refused connection, timeout, shutting down): retry.

``pyvault-tokens alerts`` keeps the Nagios convention instead (3 is UNKNOWN).
Messages never show a password: URLs are masked wherever they are printed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import click
import psycopg
from psycopg.conninfo import conninfo_to_dict

CHECK_FAILED, CONFIG, UNAVAILABLE = 1, 2, 3

# Kinds of trouble. Only "unavailable" is worth retrying.
DOWN = "unavailable"
LOGIN = "login"
NO_DATABASE = "no_database"
PRIVILEGE = "privilege"
NOT_MIGRATED = "not_migrated"
READ_ONLY = "read_only"
OTHER = "other"

# What to do, by kind (PRIVILEGE depends on the command: see ROLE_HINTS).
HINTS = {
    DOWN: "check that the server is running and reachable, then retry",
    LOGIN: "check the user and password in the URL (and pg_hba.conf)",
    NO_DATABASE: "check the database name in the URL",
    NOT_MIGRATED: "run `pyvault-tokens migrate` on this database",
    READ_ONLY: "point it at the primary, not a standby",
}
ADMIN_HINT = "grant pyvault_admin to this login"
ROLE_HINTS = {
    "validate": "grant pyvault_api (or pyvault_admin) to this login",
    "status": "grant pyvault_api (or pyvault_admin) to this login",
    "refresh": "grant pyvault_api (or pyvault_admin) to this login",
    "alerts": "grant pyvault_monitor to this login",
    "metrics": "grant pyvault_monitor to this login",
    "dashboard": "grant pyvault_monitor to this login",
    "refresher": "grant pyvault_refresher to the service's login",
    "migrate": "run migrate as the database owner or a superuser",
    "demo": "run the demo as the database owner or a superuser",
}

# libpq reports a failed connection without a SQLSTATE; the server's FATAL message
# (in English unless lc_messages says otherwise) is all there is. Anything not matched
# here counts as unavailable, so a service retries rather than stops.
_CONNECT_MESSAGES = (
    ("password authentication failed", LOGIN, "28P01"),
    ("authentication failed", LOGIN, "28000"),
    ("no password supplied", LOGIN, "28P01"),
    ("no pg_hba.conf entry", LOGIN, "28000"),
    ("permission denied for database", PRIVILEGE, "42501"),
    ("role \"", LOGIN, "28000"),  # role "x" does not exist, or is not permitted to log in
    ("database \"", NO_DATABASE, "3D000"),  # database "x" does not exist
    ("invalid connection option", OTHER, None),
    ("invalid integer value", OTHER, None),
    ("invalid port number", OTHER, None),
    ("invalid sslmode value", OTHER, None),
    ("is not a valid port number", OTHER, None),
)
# Missing objects mean "not migrated" only when they are ours (pg_cron's are not).
_OURS = re.compile(r'\bauth\b|"auth')
_SQLSTATES = {
    "28P01": LOGIN, "28000": LOGIN, "3D000": NO_DATABASE, "42501": PRIVILEGE,
    "3F000": NOT_MIGRATED, "42883": NOT_MIGRATED, "42P01": NOT_MIGRATED,
    "25006": READ_ONLY,
}
# Classes of SQLSTATE that mean "not now": connection exceptions, insufficient resources,
# operator intervention (shutdown, cancel/timeout), system errors, transaction rollback.
_DOWN_CLASSES = ("08", "53", "57", "58", "40")

_URL_PASSWORD = re.compile(r"(://[^:/@\s]*:)[^@\s]*@")
_KEYWORD_PASSWORD = re.compile(r"(password\s*=\s*)('(?:[^'\\]|\\.)*'|[^\s&]+)", re.IGNORECASE)


def mask_url(text: str) -> str:
    """Any URL or conninfo in ``text`` with its password replaced by ***."""
    return _KEYWORD_PASSWORD.sub(r"\1***", _URL_PASSWORD.sub(r"\1***@", text))


def one_line(text: object) -> str:
    return " ".join(str(text).split())


def check_url(url: str) -> str:
    """The URL unchanged when libpq can parse it; else a ConfigError that shows it masked."""
    try:
        conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        raise ConfigError(f"not a PostgreSQL URL: {mask_url(url)} (use "
                          "postgresql://user@host:port/dbname or key=value pairs)") from None
    return url


@dataclass(frozen=True)
class Problem:
    """One classified database error: its kind, SQLSTATE (inferred for a failed
    connection), the server's one-line message, and the server's hint if any."""

    kind: str
    sqlstate: str | None
    detail: str
    server_hint: str | None = None

    @property
    def retryable(self) -> bool:
        return self.kind == DOWN

    def hint(self, command: str | None = None) -> str | None:
        if self.kind == PRIVILEGE:
            return ROLE_HINTS.get(command or "", ADMIN_HINT)
        return HINTS.get(self.kind, self.server_hint)


def classify(exc: psycopg.Error) -> Problem:
    """Classify a psycopg error. Only the primary message is kept: DETAIL lines may hold
    values, and a failed connection's message never holds the password."""
    sqlstate = getattr(exc, "sqlstate", None)
    if sqlstate:
        diag = exc.diag
        detail = one_line(mask_url(diag.message_primary or str(exc).split("\n", 1)[0]))
        kind = _SQLSTATES.get(sqlstate) or (DOWN if sqlstate[:2] in _DOWN_CLASSES else OTHER)
        if kind == NOT_MIGRATED and not _OURS.search(detail):
            kind = OTHER
        hint = one_line(diag.message_hint) if diag.message_hint else None
        return Problem(kind, sqlstate, detail, hint)
    text = mask_url(str(exc))
    # "connection failed: connection to server at ... failed: FATAL:  the reason"
    detail = one_line(text.split("\n", 1)[0].removeprefix("connection failed: "))
    detail = re.sub(r"\bFATAL:\s+", "", detail)
    if isinstance(exc, psycopg.ProgrammingError):
        return Problem(OTHER, None, detail)
    lowered = text.lower()
    for needle, kind, state in _CONNECT_MESSAGES:
        if needle in lowered:
            return Problem(kind, state, detail, "check the URL" if kind == OTHER else None)
    return Problem(DOWN, None, detail)


class ConfigError(click.ClickException):
    """Usage or configuration: fix something, then run again (exit 2)."""

    exit_code = CONFIG


class DatabaseUnavailable(click.ClickException):
    """The database cannot be reached or is shutting down: retry later (exit 3)."""

    exit_code = UNAVAILABLE


_WHAT = {
    DOWN: "the database is unavailable",
    LOGIN: "the database refused the login",
    NOT_MIGRATED: "the database is not migrated",
    READ_ONLY: "the database is read-only",
}


def message(problem: Problem, command: str | None = None) -> str:
    """One line: what failed (with the server's words), then what to do."""
    what = _WHAT.get(problem.kind)
    text = f"{what} ({problem.detail})" if what else problem.detail
    hint = problem.hint(command)
    return one_line(f"{text}: {hint}" if hint else text)


def to_click(exc: psycopg.Error, command: str | None = None) -> click.ClickException:
    """The ClickException (exit 2 or 3) for a psycopg error raised by ``command``."""
    problem = classify(exc)
    cls = DatabaseUnavailable if problem.retryable else ConfigError
    return cls(message(problem, command))
