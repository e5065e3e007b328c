"""`pyvault-tokens demo`: the refresh story, told against a real database.

Without --database it runs on an embedded throwaway cluster. It issues a token that
expires in 3 days, lets validation refresh it, shows the old token working through
its grace window and refused after it, shows reuse detection revoking a family, and
runs the diagnostics. To keep the story short it sets the API token type's grace
window to 2 s for its duration and restores the policy afterwards. Tokens are shown
by prefix only.
"""

from __future__ import annotations

import time
from contextlib import contextmanager

import psycopg
from psycopg.rows import dict_row
from rich.console import Console

from pyvault_tokens import api
from pyvault_tokens.display import token_prefix
from pyvault_tokens.migrate import migrate

GRACE_SECONDS = 2


@contextmanager
def _database(url: str | None, console: Console):
    if url:
        yield url
        return
    try:
        from pyvault_tokens.embedded import start_cluster
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise SystemExit(
            "the embedded demo needs testing.postgresql: pip install 'pyvault-tokens[embedded]',"
            " or pass --database URL"
        ) from exc
    console.print("[dim]starting an embedded throwaway PostgreSQL cluster…[/dim]")
    pg = start_cluster()
    try:
        console.print(f"[dim]cluster on port {pg.settings['port']}[/dim]")
        yield pg.url(database="postgres")
    finally:
        pg.stop()
        console.print("[dim]cluster stopped and removed[/dim]")


def _show(console: Console, label: str, row: dict) -> None:
    verdict = "[green]valid[/green]" if row["is_valid"] else "[red]refused[/red]"
    extra = ""
    if row.get("new_token"):
        extra = f", X-New-Token: {token_prefix(row['new_token'])}"
    console.print(f"  {label}: {verdict}, reason [bold]{row['refresh_reason']}[/bold]{extra}")
    console.print(f"    [dim]{row['message']}[/dim]")


def run_demo(database: str | None, console: Console) -> None:
    with _database(database, console) as url:
        console.rule("1. migrate")
        result = migrate(url)
        for migration_id in result.applied:
            console.print(f"  applied migration {migration_id}")
        console.print(f"  applied {len(result.sql_files)} SQL files")

        with psycopg.connect(url, autocommit=True, row_factory=dict_row) as conn:
            saved = conn.execute(
                "SELECT grace_period, reuse_action FROM auth.token_refresh_policy"
                " WHERE token_type = 'API'"
            ).fetchone()
            try:
                _story(conn, console)
            finally:
                conn.execute(
                    "SELECT auth.set_refresh_policy('API', p_grace_period => %s,"
                    " p_reuse_action => %s)",
                    (saved["grace_period"], saved["reuse_action"]),
                )


def _story(conn: psycopg.Connection, console: Console) -> None:
    conn.execute(
        "SELECT auth.set_refresh_policy('API', p_grace_period => %s::interval,"
        " p_reuse_action => 'REJECT')", (f"{GRACE_SECONDS} seconds",),
    )
    keys = api.register_user(conn, "demo-tenant", "demo-user")

    console.rule("2. issue a token that expires in 3 days")
    issued = api.issue(conn, keys["user_hk"], keys["tenant_hk"], scope=["api:read"],
                       token_type="API", expires_in="3 days")
    old = issued["token"]
    console.print(f"  issued {token_prefix(old)} (shown once; only its sha256 is stored),"
                  f" expires {issued['expires_at']:%Y-%m-%d %H:%M}")

    console.rule("3. the next request validates it and gets a new token back")
    first = api.validate_and_refresh(conn, old)
    _show(console, "old token", first)
    new = first["new_token"]
    console.print(f"  the HTTP layer answers with X-New-Token, X-Token-Expires "
                  f"{first['expires_at']:%Y-%m-%d %H:%M}, "
                  f"X-Refresh-Reason {first['refresh_reason']}")
    again = api.validate_and_refresh(conn, old)
    _show(console, "old token again (a retry, or a request in flight)", again)
    same = "yes" if again["new_token"] == new else "NO"
    console.print(f"  same successor handed out again: [bold]{same}[/bold]")

    console.rule(f"4. the client switches; the old token lives {GRACE_SECONDS} s more")
    _show(console, "new token", api.validate_and_refresh(conn, new))
    _show(console, "old token, inside its grace window", api.validate_and_refresh(conn, old))

    console.rule("5. after the grace window the old token is refused")
    time.sleep(GRACE_SECONDS + 0.5)
    _show(console, "old token", api.validate_and_refresh(conn, old))
    _show(console, "new token", api.validate_and_refresh(conn, new))

    console.rule("6. reuse detection: a stolen old token revokes its family")
    conn.execute("SELECT auth.set_refresh_policy('API', p_reuse_action => 'REVOKE_FAMILY')")
    victim = api.issue(conn, keys["user_hk"], keys["tenant_hk"], token_type="API",
                       expires_in="3 days")["token"]
    rotated = api.validate_and_refresh(conn, victim)["new_token"]
    api.validate_and_refresh(conn, rotated)
    time.sleep(GRACE_SECONDS + 0.5)
    _show(console, "old token presented by a thief", api.validate_and_refresh(conn, victim))
    _show(console, "the legitimate successor", api.validate_and_refresh(conn, rotated))
    events = conn.execute(
        "SELECT count(*) AS n FROM auth.security_event WHERE event_type = 'TOKEN_REUSE'"
    ).fetchone()["n"]
    console.print(f"  reuse events in the security log so far: {events}")

    console.rule("7. diagnostics for the new token (a dry run: nothing changes)")
    from pyvault_tokens.cli import print_diagnosis

    print_diagnosis(api.diagnose(conn, new))
