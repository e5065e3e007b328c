"""The pyvault-tokens command line."""

from __future__ import annotations

import sys

import click
import psycopg
from rich.console import Console
from rich.table import Table

from pyvault_tokens import api
from pyvault_tokens.display import token_prefix, ttl_to_interval
from pyvault_tokens.migrate import migrate as run_migrate

# Piped output gets a fixed width instead of rich's 80 columns.
out = Console(width=None if sys.stdout.isatty() else 120)
err = Console(stderr=True)

database_option = click.option(
    "--database", "database", envvar="DATABASE_URL", metavar="URL",
    help="PostgreSQL URL (default: $DATABASE_URL).",
)


def _require(database: str | None) -> str:
    if not database:
        raise click.UsageError("no database given: pass --database URL or set DATABASE_URL")
    return database


def _connect(database: str | None) -> psycopg.Connection:
    try:
        return psycopg.connect(_require(database), autocommit=True)
    except psycopg.OperationalError as exc:
        raise click.ClickException(f"cannot connect to the database: {exc}") from None


def _read_token(token: str) -> str:
    """A token argument of '-' is read from stdin, so it stays out of shell history."""
    if token == "-":
        token = sys.stdin.readline()
    return token.strip()


def _print_row(row: dict, title: str) -> None:
    table = Table(title=title, show_header=False)
    for key, value in row.items():
        if key == "new_token":
            value = token_prefix(value) if value else "-"
        elif isinstance(value, bytes | memoryview):
            value = bytes(value).hex()
        table.add_row(key, "-" if value is None else str(value))
    out.print(table)


@click.group()
@click.version_option(package_name="pyvault-tokens")
def main() -> None:
    """Self-refreshing API tokens in PostgreSQL."""


@main.command()
@database_option
def migrate(database: str | None) -> None:
    """Apply the migrations and re-apply every SQL function and view."""
    try:
        result = run_migrate(_require(database))
    except psycopg.OperationalError as exc:
        raise click.ClickException(f"cannot connect to the database: {exc}") from None
    if result.applied:
        for migration_id in result.applied:
            out.print(f"applied migration {migration_id}")
    else:
        out.print("migrations: nothing to apply")
    out.print(f"applied {len(result.sql_files)} SQL files (functions and views)")


@main.command()
@database_option
@click.option("--user", "user", required=True, help="User name (registered if new).")
@click.option("--tenant", "tenant", required=True, help="Tenant name (registered if new).")
@click.option("--scope", "scopes", multiple=True, default=["api:read"], show_default=True,
              help="A scope; repeat for several.")
@click.option("--type", "token_type", default="PRODUCTION", show_default=True,
              type=click.Choice(["API", "PRODUCTION", "API_KEY"]))
@click.option("--ttl", default=None, help="Lifetime such as 30d, 12h (default: the policy's).")
def issue(database, user, tenant, scopes, token_type, ttl) -> None:
    """Issue a token. It is printed once, on stdout; it is not stored anywhere."""
    try:
        expires_in = ttl_to_interval(ttl) if ttl else None
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--ttl") from None
    with _connect(database) as conn:
        try:
            keys = api.register_user(conn, tenant, user)
            row = api.issue(conn, keys["user_hk"], keys["tenant_hk"], scope=list(scopes),
                            token_type=token_type, expires_in=expires_in)
        except psycopg.errors.InvalidParameterValue as exc:
            raise click.ClickException(str(exc).splitlines()[0]) from None
    click.echo(row["token"])
    err.print(f"token id {bytes(row['api_token_hk']).hex()[:16]}…, expires {row['expires_at']}")


@main.command()
@database_option
@click.argument("token")
@click.option("--scope", default="api:read", show_default=True)
def validate(database, token, scope) -> None:
    """Validate a token (without refreshing it). Exits 1 when it is invalid."""
    with _connect(database) as conn:
        row = api.validate(conn, _read_token(token), scope)
    _print_row(row, "validation")
    sys.exit(0 if row["is_valid"] else 1)


@main.command()
@database_option
@click.argument("token")
@click.option("--reason", default="revoked by administrator", show_default=True)
def revoke(database, token, reason) -> None:
    """Revoke a token and its whole rotation family. Exits 1 when nothing was revoked."""
    with _connect(database) as conn:
        revoked = api.revoke(conn, _read_token(token), reason)
    out.print("revoked" if revoked else "not revoked (unknown, malformed or already revoked)")
    sys.exit(0 if revoked else 1)


@main.command()
@database_option
@click.argument("token")
def status(database, token) -> None:
    """Show whether a token is valid and whether a refresh is recommended."""
    with _connect(database) as conn:
        row = api.status(conn, _read_token(token))
    _print_row(row, "refresh status")
    sys.exit(0 if row["is_valid"] else 1)


@main.command()
@database_option
@click.argument("token")
@click.option("--force", is_flag=True, help="Refresh even outside the threshold.")
@click.option("--threshold-days", type=int, default=None,
              help="Override the policy's refresh threshold.")
def refresh(database, token, force, threshold_days) -> None:
    """Refresh a token. A new token (ROTATE policy) is printed once, on stdout."""
    with _connect(database) as conn:
        row = api.refresh(conn, _read_token(token), threshold_days=threshold_days, force=force)
    if row["new_token"]:
        click.echo(row["new_token"])
    err.print(f"{row['refresh_reason']}: {row['message']} (expires {row['expires_at']})")
    sys.exit(0 if row["success"] or row["refresh_reason"] == "NO_REFRESH_NEEDED" else 1)


@main.command()
@database_option
@click.argument("token")
@click.option("--apply", is_flag=True,
              help="Really refresh (default: a dry run that is rolled back).")
def diagnose(database, token, apply) -> None:
    """Diagnose the refresh system for one token. Exits 1 when any step fails."""
    with _connect(database) as conn:
        rows = api.diagnose(conn, _read_token(token), apply=apply)
    print_diagnosis(rows)
    sys.exit(1 if any(r["result"].startswith("FAIL") for r in rows) else 0)


_NOISE = {"updated_at", "token_type", "issued_at", "recommendation_reason", "message"}


def _brief(value) -> str:
    text = str(value)
    # ISO timestamps: to the second is enough for a person.
    if len(text) >= 19 and text[4] == "-" and text[10] == "T":
        return text[:19].replace("T", " ")
    return text


def print_diagnosis(rows: list[dict]) -> None:
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
    out.print(table)


@main.command()
@click.option("--database", "database", default=None, metavar="URL",
              help="Run against this database instead of an embedded throwaway cluster.")
def demo(database) -> None:
    """Tell the refresh story: issue, refresh on use, grace, cut-off, diagnostics."""
    from pyvault_tokens.demo import run_demo

    run_demo(database, out)


if __name__ == "__main__":
    main()
