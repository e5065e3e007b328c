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

out = Console()
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


if __name__ == "__main__":
    main()
