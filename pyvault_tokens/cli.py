"""The pyvault-tokens command line.

Every failure a person can cause is one line on stderr, never a traceback or a password.
Exit codes (see pyvault_tokens.errors): 0 success, 1 a check failed, 2 usage or
configuration, 3 the database is unavailable; ``alerts`` follows the Nagios convention.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import Any

import click
import psycopg
from rich.console import Console
from rich.table import Table

from pyvault_tokens import api, errors
from pyvault_tokens.db import scalar
from pyvault_tokens.display import (
    looks_like_token,
    print_diagnosis,
    token_prefix,
    ttl_to_interval,
)
from pyvault_tokens.migrate import MigrateRefused
from pyvault_tokens.migrate import migrate as run_migrate
from pyvault_tokens.store import TokenStoreError

# Piped output gets a fixed width instead of rich's 80 columns.
out = Console(width=None if sys.stdout.isatty() else 120)
err = Console(stderr=True)

database_option = click.option(
    "--database", "database", envvar="DATABASE_URL", metavar="URL",
    help="PostgreSQL URL (default: $DATABASE_URL).",
)


def _require(database: str | None) -> str:
    if not database:
        raise errors.ConfigError("no database given: pass --database URL or set DATABASE_URL")
    return errors.check_url(database)


def _connect(database: str | None) -> psycopg.Connection:
    return _connect_conninfo(_require(database))


def _connect_conninfo(conninfo: str) -> psycopg.Connection:
    # No server-side prepared statements: behind PgBouncer in transaction mode (before
    # 1.21) the next statement may run on a server connection that never prepared it.
    return psycopg.connect(conninfo, autocommit=True, prepare_threshold=None)


def _one_line_usage(exc: click.UsageError) -> click.UsageError:
    """Click's usage error as one line (no usage block), pointing at --help."""
    if exc.ctx is None:
        return exc
    # Exit code 2, as for every click.UsageError (a class attribute of click's).
    return click.UsageError(f"{exc.format_message()} (see `{exc.ctx.command_path} --help`)")


class PyvaultGroup(click.Group):
    """A click group whose commands fail with one line on stderr: usage errors, psycopg
    errors (classified in pyvault_tokens.errors), token store and migrate refusals."""

    def make_context(self, info_name: str | None, args: list[str],
                     parent: click.Context | None = None, **extra: Any) -> click.Context:
        try:
            return super().make_context(info_name, args, parent=parent, **extra)
        except click.UsageError as exc:
            raise _one_line_usage(exc) from None

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except click.UsageError as exc:
            raise _one_line_usage(exc) from None
        except psycopg.Error as exc:
            raise errors.to_click(exc, ctx.invoked_subcommand) from None
        except (TokenStoreError, MigrateRefused) as exc:
            raise errors.ConfigError(errors.one_line(exc)) from None


def _read_token(token: str) -> str:
    """A token argument of '-' is read from stdin, so it stays out of shell history."""
    if token == "-":
        token = sys.stdin.readline()
    return token.strip()


def _print_row(row: Mapping[str, Any], title: str) -> None:
    table = Table(title=title, show_header=False)
    for key, value in row.items():
        if key == "new_token":
            value = token_prefix(value) if value else "-"
        elif isinstance(value, bytes | memoryview):
            value = bytes(value).hex()
        table.add_row(key, "-" if value is None else str(value))
    out.print(table)


@click.group(cls=PyvaultGroup)
@click.version_option(package_name="pyvault-tokens")
def main() -> None:
    """Self-refreshing API tokens in PostgreSQL.

    Exit codes: 0 success, 1 a check failed, 2 usage or configuration (bad URL, database
    not migrated, missing role), 3 the database is unavailable. `alerts` follows the
    Nagios plugin convention.
    """


@main.command()
@database_option
@click.option("--role-prefix", default=None, metavar="NAME",
              help="Grant this database to NAME_api, NAME_admin, NAME_monitor and "
                   "NAME_refresher instead of the cluster-wide pyvault_* roles (stored; "
                   "set once, in place of the default).")
def migrate(database: str | None, role_prefix: str | None) -> None:
    """Apply the migrations and re-apply every SQL function and view."""
    result = run_migrate(_require(database), role_prefix=role_prefix)
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
              type=click.Choice(["API", "PRODUCTION", "API_KEY"]),
              help="Token type; its refresh policy applies (API_KEY extends, others rotate).")
@click.option("--ttl", default=None, help="Lifetime such as 30d, 12h (default: the policy's).")
def issue(database: str | None, user: str, tenant: str, scopes: tuple[str, ...],
          token_type: str, ttl: str | None) -> None:
    """Issue a token. It is printed once, on stdout; it is not stored anywhere."""
    try:
        expires_in = ttl_to_interval(ttl) if ttl else None
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--ttl") from None
    with _connect(database) as conn:
        keys = api.register_user(conn, tenant, user)
        row = api.issue(conn, keys["user_hk"], keys["tenant_hk"], scope=list(scopes),
                        token_type=token_type, expires_in=expires_in)
    click.echo(row["token"])
    err.print(f"token id {bytes(row['api_token_hk']).hex()[:16]}…, expires {row['expires_at']}")


@main.command()
@database_option
@click.argument("token")
@click.option("--scope", default="api:read", show_default=True,
              help="The scope the token must carry.")
def validate(database: str | None, token: str, scope: str) -> None:
    """Validate TOKEN (without refreshing it). Exits 1 when it is invalid.

    TOKEN is the token, or - to read it from stdin (keeps it out of shell history).
    """
    with _connect(database) as conn:
        row = api.validate(conn, _read_token(token), scope)
    _print_row(row, "validation")
    sys.exit(0 if row["is_valid"] else 1)


@main.command()
@database_option
@click.argument("token")
@click.option("--reason", default="revoked by administrator", show_default=True,
              help="Why, for the security log.")
def revoke(database: str | None, token: str, reason: str) -> None:
    """Revoke TOKEN and its whole rotation family. Exits 1 when nothing was revoked.

    TOKEN is the token, or - to read it from stdin (keeps it out of shell history).
    """
    with _connect(database) as conn:
        revoked = api.revoke(conn, _read_token(token), reason)
    out.print("revoked" if revoked else "not revoked (unknown, malformed or already revoked)")
    sys.exit(0 if revoked else 1)


@main.command()
@database_option
@click.argument("token")
def status(database: str | None, token: str) -> None:
    """Show whether TOKEN is valid and whether a refresh is recommended. Exits 1 when it
    is invalid.

    TOKEN is the token, or - to read it from stdin (keeps it out of shell history).
    """
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
def refresh(database: str | None, token: str, force: bool, threshold_days: int | None) -> None:
    """Refresh TOKEN. A new token (ROTATE policy) is printed once, on stdout. Exits 1
    when a due refresh failed.

    TOKEN is the token, or - to read it from stdin (keeps it out of shell history).
    """
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
def diagnose(database: str | None, token: str, apply: bool) -> None:
    """Diagnose the refresh system for TOKEN. Exits 1 when any step fails.

    TOKEN is the token, or - to read it from stdin (keeps it out of shell history).
    """
    with _connect(database) as conn:
        rows = api.diagnose(conn, _read_token(token), apply=apply)
    print_diagnosis(rows, out)
    sys.exit(1 if any(r["result"].startswith("FAIL") for r in rows) else 0)


@main.command("refresh-batch")
@database_option
@click.option("--batch-size", type=click.IntRange(1, 100000), default=1000, show_default=True,
              help="Tokens per committed batch.")
@click.option("--threshold-days", type=click.IntRange(0, 3650), default=None,
              help="Override the policy thresholds.")
@click.option("--dry-run", is_flag=True, help="Count what would be done; change nothing.")
def refresh_batch(database: str | None, batch_size: int, threshold_days: int | None,
                  dry_run: bool) -> None:
    """Run the batch refresh now, one committed batch at a time, with progress."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    with _connect(database) as conn:
        plan = api.refresh_batch(conn, threshold_days=threshold_days, dry_run=True)
        if plan["details"].get("skipped"):
            out.print("skipped: another batch run is in progress")
            return
        total = plan["tokens_found"]
        counts = {"extended": 0, "enqueued": 0, "failed": 0}
        if not dry_run and total:
            with Progress(TextColumn("refreshing"), BarColumn(), MofNCompleteColumn(),
                          console=err, transient=True) as progress:
                task = progress.add_task("batch", total=total)
                while True:
                    row = api.refresh_batch(conn, batch_size=batch_size, max_tokens=batch_size,
                                            threshold_days=threshold_days)
                    if row["details"].get("skipped"):
                        out.print("stopped: another batch run took over")
                        break
                    if row["tokens_found"] == 0:
                        break
                    for key in counts:
                        counts[key] += row["details"]["counts"][key]
                    progress.advance(task, row["tokens_found"])
        elif dry_run:
            counts = {**plan["details"]["counts"]}
    verb = "would be" if dry_run else "were"
    out.print(f"{total} tokens due: {counts['extended']} {verb} extended, "
              f"{counts['enqueued']} {verb} enqueued for their holders, {counts['failed']} failed")


@main.command()
@database_option
@click.option("--batch-size", type=click.IntRange(1, 100000), default=1000, show_default=True,
              help="Rows of each kind per committed batch.")
def prune(database: str | None, batch_size: int) -> None:
    """Prune token history now (as the daily job does), one committed batch at a time:
    spent tokens leave the bridge, dead families and history past its retention go.
    Prints a line per batch and a summary."""
    totals = {"tokens_spent": 0, "families_removed": 0, "tokens_removed": 0, "rows_deleted": 0}
    batches = 0
    with _connect(database) as conn:
        while True:
            row = api.prune_history_batch(conn, batch_size=batch_size)
            if row["skipped"]:
                out.print("skipped: another prune run is in progress")
                return
            batches += 1
            for key in totals:
                totals[key] += row[key]
            click.echo(f"batch {batches}: {row['tokens_spent']} spent tokens moved, "
                       f"{row['families_removed']} dead families removed "
                       f"({row['tokens_removed']} tokens), "
                       f"{row['rows_deleted']} history rows deleted", err=True)
            if not row["more"]:
                break
    out.print(f"{totals['tokens_spent']} spent tokens moved out of the bridge, "
              f"{totals['families_removed']} dead families removed ({totals['tokens_removed']} "
              f"tokens), {totals['rows_deleted']} history rows deleted, in {batches} batches")


# In the cron database the auth schema may not exist, so pg_cron is found here as
# auth._cron_schema() finds it in ours: the schema that is a member ('e') of the pg_cron
# extension in pg_depend, never by the name cron, which any login that may CREATE in that
# database can take. Every name and operator is qualified: that database's search_path
# may have been set by someone else.
PG_CRON_SCHEMA_SQL = (
    "SELECT n.nspname FROM pg_catalog.pg_extension AS e"
    " INNER JOIN pg_catalog.pg_depend AS d"
    " ON d.refclassid OPERATOR(pg_catalog.=) 'pg_catalog.pg_extension'::pg_catalog.regclass"
    " AND d.refobjid OPERATOR(pg_catalog.=) e.oid"
    " AND d.classid OPERATOR(pg_catalog.=) 'pg_catalog.pg_namespace'::pg_catalog.regclass"
    " AND d.deptype OPERATOR(pg_catalog.=) 'e'"
    " INNER JOIN pg_catalog.pg_namespace AS n ON d.objid OPERATOR(pg_catalog.=) n.oid"
    " WHERE e.extname OPERATOR(pg_catalog.=) 'pg_cron'"
)
CRON_SCHEDULE_SQL = (
    "SELECT cron.schedule_in_database(%s::pg_catalog.text, %s::pg_catalog.text,"
    " %s::pg_catalog.text, %s::pg_catalog.text)"
)
CRON_UNSCHEDULE_SQL = (
    "SELECT pg_catalog.count(cron.unschedule(j.jobid)) FROM cron.job AS j"
    " WHERE j.jobname OPERATOR(pg_catalog.=) %s::pg_catalog.text"
)


def _cron_connection(conn: psycopg.Connection, database: str) -> psycopg.Connection:
    """A connection to the database where pg_cron lives (same server and user), once it is
    sure that the schema cron there is the pg_cron extension's own."""
    cron_db = scalar(conn, "SELECT pg_catalog.current_setting('cron.database_name', true)")
    if not cron_db:
        raise errors.ConfigError(
            "pg_cron is not installed on this server (no cron.database_name); run "
            "`pyvault-tokens refresh-batch` from another scheduler, or install pg_cron")
    params = psycopg.conninfo.conninfo_to_dict(database)
    params["dbname"] = cron_db
    cron = _connect_conninfo(psycopg.conninfo.make_conninfo("", **params))
    try:
        schema = cron.execute(PG_CRON_SCHEMA_SQL).fetchone()
    except BaseException:
        cron.close()
        raise
    if schema is None or schema[0] != "cron":
        fake = scalar(cron, "SELECT pg_catalog.to_regnamespace('cron') IS NOT NULL")
        cron.close()
        raise _no_pg_cron(cron_db, fake)
    return cron


def _no_pg_cron(cron_db: str, fake: bool = False) -> errors.ConfigError:
    found = (": it has a schema named cron, but not pg_cron's (refusing to call anything in "
             "it)" if fake else "")
    return errors.ConfigError(
        f"pg_cron is not installed in database {cron_db} (cron.database_name){found}; run "
        "CREATE EXTENSION pg_cron there, or run `pyvault-tokens refresh-batch` from another "
        "scheduler")


@main.command()
@database_option
@click.option("--schedule", default="0 */6 * * *", show_default=True, help="A cron schedule.")
@click.option("--job-name", default="token-refresh-check", show_default=True,
              help="The pg_cron job's name (its pruning job is NAME-prune).")
def schedule(database: str | None, schedule: str, job_name: str) -> None:
    """Schedule the batch job with pg_cron (idempotent), wherever pg_cron lives."""
    with _connect(database) as conn:
        try:
            job = api.schedule(conn, schedule, job_name)
        except psycopg.errors.FeatureNotSupported:
            jobs = api.cron_jobs(conn, schedule, job_name)
            with _cron_connection(conn, _require(database)) as cron:
                ids = [scalar(cron, CRON_SCHEDULE_SQL,
                                  (j["job_name"], j["schedule"], j["command"],
                                   j["database_name"])) for j in jobs]
            job = ids[0]
    out.print(f"scheduled {job_name} ({schedule}) as pg_cron job {job}, "
              f"with {job_name}-prune pruning its run history")


@main.command()
@database_option
@click.option("--job-name", default="token-refresh-check", show_default=True,
              help="The pg_cron job's name (its pruning job NAME-prune goes too).")
def unschedule(database: str | None, job_name: str) -> None:
    """Remove the batch job (and its pruning job) from pg_cron. Exits 1 when there was
    no such job."""
    with _connect(database) as conn:
        try:
            removed = api.unschedule(conn, job_name)
        except psycopg.errors.FeatureNotSupported:
            with _cron_connection(conn, _require(database)) as cron:
                removed = False
                # The jobs schedule made, as auth.token_refresh_cron_jobs names them (the
                # schedule given does not change the names).
                for name in [j["job_name"] for j in api.cron_jobs(conn, "0 */6 * * *", job_name)]:
                    try:
                        n = scalar(cron, "SELECT count(cron.unschedule(jobid))"
                                       " FROM cron.job WHERE jobname = %s", (name,))
                    except (psycopg.errors.InvalidSchemaName, psycopg.errors.UndefinedTable):
                        raise _no_pg_cron(cron.info.dbname) from None
                    removed = removed or (n > 0 and name == job_name)
    out.print(f"removed {job_name}" if removed else f"no job named {job_name}")
    sys.exit(0 if removed else 1)


@main.command()
@database_option
@click.option("--store", "store_path", required=True, type=click.Path(dir_okay=False),
              help="The token store file.")
@click.option("--sweep-interval", type=float, default=3600.0, show_default=True,
              help="Seconds between sweeps when no notification arrives.")
@click.option("--min-sweep-interval", type=click.FloatRange(0), default=5.0, show_default=True,
              help="Seconds at least between sweeps that notifications trigger: a flood of "
                   "NOTIFYs costs one sweep per interval.")
@click.option("--once", is_flag=True, help="Sweep once and exit.")
@click.option("--listen-database", "listen_database", envvar="PYVAULT_LISTEN_DATABASE_URL",
              metavar="URL", default=None,
              help="Where to LISTEN for the batch job's notifications (default: --database). "
                   "Behind PgBouncer in transaction mode, PostgreSQL's own address: LISTEN "
                   "needs a session.")
@click.option("--no-listen", is_flag=True,
              help="Do not listen for notifications; sweep every --sweep-interval only.")
def refresher(database: str | None, store_path: str, sweep_interval: float,
              min_sweep_interval: float, once: bool, listen_database: str | None,
              no_listen: bool) -> None:
    """Run the refresher service for the tokens in a store (stops on SIGTERM).

    Logs JSON lines on stderr. Retries with backoff while the database is unavailable;
    stops at once with exit 2 on a refused login, a missing role or database, a database
    that is not migrated, or an unusable store. When notifications do not reach the
    listener (a transaction-pooling PgBouncer) it says so and sweeps on the interval.
    """
    from pyvault_tokens.refresher import run_service

    listen_url = errors.check_url(listen_database) if listen_database else None
    run_service(_require(database), store_path, sweep_interval=sweep_interval,
                min_sweep_interval=min_sweep_interval, once=once, listen_url=listen_url,
                listen=not no_listen)


@main.group(cls=PyvaultGroup)
def store() -> None:
    """Manage the durable token store used by the refresher and the httpx client."""


store_option = click.option("--store", "store_path", required=True,
                            type=click.Path(dir_okay=False), help="The token store file.")


@store.command("add")
@store_option
@click.argument("name")
def store_add(store_path: str, name: str) -> None:
    """Add a token under NAME, read from stdin (never from the command line).

    NAME is what the token is stored under (the httpx client asks for it by name).
    """
    from pyvault_tokens.store import TokenStore

    token = sys.stdin.readline().strip()
    if not looks_like_token(token):
        raise errors.ConfigError("stdin does not hold an ovt_prod_ token: pipe the token in,"
                                   " e.g. `store add NAME --store FILE < token.txt`")
    TokenStore(store_path).put(name, token)
    out.print(f"stored {name}: {token_prefix(token)}")


@store.command("list")
@store_option
def store_list(store_path: str) -> None:
    """List names, token prefixes and expiry; never the secrets."""
    from pyvault_tokens.store import TokenStore

    table = Table("name", "token", "expires", "updated")
    for name, entry in TokenStore(store_path).items():
        table.add_row(name, token_prefix(entry.token), str(entry.expires_at or "-"),
                      str(entry.updated_at or "-"))
    out.print(table)


@store.command("remove")
@store_option
@click.argument("name")
def store_remove(store_path: str, name: str) -> None:
    """Remove the token stored under NAME. Exits 1 when there is none."""
    from pyvault_tokens.store import TokenStore

    removed = TokenStore(store_path).remove(name)
    out.print(f"removed {name}" if removed else f"no token named {name}")
    sys.exit(0 if removed else 1)


@main.command()
@click.option("--database", "database", default=None, metavar="URL",
              help="Run against this database instead of an embedded throwaway cluster.")
def demo(database: str | None) -> None:
    """Tell the refresh story: issue, refresh on use, grace, reuse, batch, diagnostics.

    Needs the embedded extra without --database. With --database it changes the API
    token type's grace window while it runs: never point it at production.
    """
    from pyvault_tokens.demo import run_demo

    run_demo(database and errors.check_url(database), out)


@main.command()
@database_option
@click.option("--listen", metavar="HOST:PORT", default=None,
              help="Serve /metrics over HTTP (e.g. 127.0.0.1:9464) instead of printing once.")
def metrics(database: str | None, listen: str | None) -> None:
    """Prometheus metrics: print one scrape, or serve /metrics with --listen.

    One scrape exits 3 when the database is unavailable (2 when it is not migrated or
    the login lacks pyvault_monitor), after printing pyvault_tokens_up 0.
    """
    try:
        from pyvault_tokens import metrics as prom
    except ImportError:
        raise errors.ConfigError(
            "metrics need prometheus_client: pip install 'pyvault-tokens[monitoring]'") from None
    url = _require(database)
    if listen is None:
        text, failure = prom.scrape(url)
        click.echo(text, nl=False)
        if failure is not None:
            raise errors.to_click(failure, "metrics")
        return
    try:
        host, port = prom.parse_listen(listen)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--listen") from None
    try:
        prom.serve(url, host, port, announce=err.print)
    except OSError as exc:
        raise errors.ConfigError(f"cannot listen on {listen} ({exc.strerror}): "
                                 "choose another address or port") from None


@main.command()
@database_option
def alerts(database: str | None) -> None:
    """Print the open alerts as a Nagios plugin does: the status on the first line of
    stdout (PYVAULT OK|WARNING|CRITICAL|UNKNOWN - ...), then a table. Exits 0 with none,
    1 with warnings only, 2 with a critical one, 3 (UNKNOWN) when the database cannot be
    queried."""
    from pyvault_tokens.alerts import fetch_alerts, print_check, unknown_line

    try:
        with _connect(database) as conn:
            rows = fetch_alerts(conn)
    except (click.ClickException, psycopg.Error) as exc:
        failure = errors.to_click(exc, "alerts") if isinstance(exc, psycopg.Error) else exc
        click.echo(unknown_line(failure.format_message()))
        raise AlertsUnknown(failure.format_message()) from None
    sys.exit(print_check(rows, out))


class AlertsUnknown(click.ClickException):
    """The Nagios UNKNOWN state: the check itself could not run."""

    exit_code = 3


@main.command()
@database_option
@click.option("--out", "out_path", required=True, metavar="FILE.html",
              type=click.Path(dir_okay=False, writable=True), help="The HTML file to write.")
@click.option("--days", type=click.IntRange(1, 90), default=7, show_default=True,
              help="Days of refresh history to chart.")
def dashboard(database: str | None, out_path: str, days: int) -> None:
    """Write a self-contained HTML dashboard (opens offline: plotly.js is inline)."""
    from pathlib import Path

    try:
        from pyvault_tokens.dashboard import render_dashboard
    except ImportError:
        raise errors.ConfigError(
            "the dashboard needs plotly: pip install 'pyvault-tokens[monitoring]'") from None
    folder = Path(out_path).parent
    if not folder.is_dir():
        raise errors.ConfigError(f"cannot write {out_path}: the folder {folder} does not "
                                 "exist; create it first, or choose another --out")
    with _connect(database) as conn:
        page = render_dashboard(conn, days=days)
    try:
        Path(out_path).write_text(page, encoding="utf-8")
    except OSError as exc:
        raise errors.ConfigError(f"cannot write {out_path} ({exc.strerror}): "
                                 "choose another --out") from None
    out.print(f"wrote {out_path} ({len(page) // 1024} KiB; opens offline)")


if __name__ == "__main__":
    main()
