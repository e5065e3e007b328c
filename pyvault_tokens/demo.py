"""`pyvault-tokens demo`: the refresh story, told against a real database.

Without --database it runs on an embedded throwaway cluster. It tells the default
story: token A expires in 3 days, so the next request refreshes it and hands back its
successor B (with the headers the HTTP layer would send); A keeps working through its
grace window; replaying A after the window is reuse, and with the default reuse action
REVOKE_FAMILY that revokes the whole family, B included. Then the batch job extends an
idle API key C that nobody presents, and the diagnostics look at C. To keep the story
short it sets the API token type's grace window to 2 s for its duration (and the reuse
action to its default, REVOKE_FAMILY, should the database have another) and restores
the policy afterwards. Tokens are shown by prefix only.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg.rows import dict_row
from rich.console import Console

from pyvault_tokens import api
from pyvault_tokens.display import print_diagnosis, rfc3339, token_prefix
from pyvault_tokens.errors import ConfigError
from pyvault_tokens.migrate import migrate

GRACE_SECONDS = 2


@contextmanager
def _database(url: str | None, console: Console) -> Iterator[str]:
    if url:
        yield url
        return
    try:
        from pyvault_tokens.embedded import start_cluster
    except ImportError:  # pragma: no cover - depends on the install
        raise ConfigError(
            "the embedded demo needs testing.postgresql: pip install 'pyvault-tokens[embedded]',"
            " or pass --database URL") from None
    console.print("[dim]starting an embedded throwaway PostgreSQL cluster…[/dim]")
    pg = start_cluster()
    try:
        console.print(f"[dim]cluster on port {pg.settings['port']}[/dim]")
        yield pg.url(database="postgres")
    finally:
        pg.stop()
        console.print("[dim]cluster stopped and removed[/dim]")


def _show(console: Console, label: str, row: Mapping[str, Any]) -> None:
    verdict = "[green]valid[/green]" if row["is_valid"] else "[red]refused[/red]"
    console.print(f"  {label}: {verdict}, reason [bold]{row['refresh_reason']}[/bold]")
    console.print(f"    [dim]{row['message']}[/dim]")


def _headers(console: Console, row: Mapping[str, Any]) -> None:
    """The refresh headers the HTTP middlewares add to this answer, as they carry them."""
    if row["new_token"]:
        console.print(f"    X-New-Token: {token_prefix(row['new_token'])}"
                      "  [dim](the whole token in the real header)[/dim]")
    console.print(f"    X-Token-Expires: {rfc3339(row['expires_at'])}")
    console.print(f"    X-Refresh-Reason: {row['refresh_reason']}")


def run_demo(database: str | None, console: Console) -> None:
    with _database(database, console) as url:
        console.rule("1. migrate")
        result = migrate(url)
        for migration_id in result.applied:
            console.print(f"  applied migration {migration_id}")
        console.print(f"  applied {len(result.sql_files)} SQL files")

        with psycopg.connect(url, autocommit=True, row_factory=dict_row) as conn:
            saved = api.set_refresh_policy(conn, "API")  # no changes: the policy as it is
            try:
                _story(conn, console, saved["reuse_action"])
            finally:
                api.set_refresh_policy(conn, "API", grace_period=saved["grace_period"],
                                       reuse_action=saved["reuse_action"])


def _story(conn: psycopg.Connection[Any], console: Console, reuse_action: str) -> None:
    api.set_refresh_policy(conn, "API", grace_period=f"{GRACE_SECONDS} seconds",
                           reuse_action="REVOKE_FAMILY")
    note = "" if reuse_action == "REVOKE_FAMILY" else f" (this database had {reuse_action})"
    console.print(f"  API tokens, for this demo: grace window {GRACE_SECONDS} s (60 s by "
                  f"default), reuse action REVOKE_FAMILY (the default){note}")
    keys = api.register_user(conn, "demo-tenant", "demo-user")

    console.rule("2. token A: issued to demo-user, expiring in 3 days")
    issued = api.issue(conn, keys["user_hk"], keys["tenant_hk"], scope=["api:read"],
                       token_type="API", expires_in="3 days")
    old = issued["token"]
    console.print(f"  token A is {token_prefix(old)} (shown once; only its sha256 is stored),"
                  f" expires {rfc3339(issued['expires_at'])}")

    console.rule("3. A is within 7 days of expiry: the next request refreshes it")
    first = api.validate_and_refresh(conn, old)
    _show(console, "old token", first)
    new = first["new_token"]
    console.print(f"  token B is A's successor, {token_prefix(new)}; the HTTP layer answers"
                  " with these headers:")
    _headers(console, first)
    again = api.validate_and_refresh(conn, old)
    _show(console, "old token again (a retry, or a request in flight)", again)
    same = "yes" if again["new_token"] == new else "NO"
    console.print(f"  same successor handed out again: [bold]{same}[/bold]")

    console.rule(f"4. the client switches to B; A lives {GRACE_SECONDS} s more")
    _show(console, "new token B", api.validate_and_refresh(conn, new))
    _show(console, "old token, inside its grace window", api.validate_and_refresh(conn, old))

    console.rule("5. after the grace window, A is replayed: reuse revokes the whole family")
    time.sleep(GRACE_SECONDS + 0.5)
    _show(console, "old token", api.validate_and_refresh(conn, old))
    _show(console, "the legitimate successor B, revoked with its family",
          api.validate_and_refresh(conn, new))
    reuse = next((a for a in api.open_alerts(conn) if a["alert"] == "REUSE_DETECTED"), None)
    if reuse is not None:  # the monitoring alert that this replay opened
        console.print(f"  open alert {reuse['alert']} ({reuse['severity']}): {reuse['message']}")
    console.print("  [dim]clients that switch on the first X-New-Token never replay; the reuse"
                  " action REJECT would refuse A alone[/dim]")

    console.rule("6. token C: an idle API key; the batch job refreshes it")
    idle = api.issue(conn, keys["user_hk"], keys["tenant_hk"], token_type="API_KEY",
                     expires_in="3 days")
    key = idle["token"]
    console.print(f"  token C is {token_prefix(key)}, an API key (EXTEND policy) that nobody "
                  f"presents, expiring {rfc3339(idle['expires_at'])}")
    batch = api.refresh_batch(conn)
    counts = batch["details"]["counts"]
    console.print(f"  auth.refresh_expiring_tokens_batch(): {batch['tokens_found']} due, "
                  f"{counts['extended']} extended, {counts['enqueued']} enqueued for their "
                  "holders (ROTATE tokens, via NOTIFY pyvault_token_refresh)")
    status = api.status(conn, key)
    console.print(f"  token C, same secret, now expires {rfc3339(status['expires_at'])}")

    console.rule("7. diagnostics for token C (a dry run: nothing changes)")
    print_diagnosis(api.diagnose(conn, key), console)
