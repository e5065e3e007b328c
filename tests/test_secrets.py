"""No plaintext token leaks: not into any table, not into what the functions return
(diagnostics, batch details, notifications, notices), not into the server log, not into
the CLI's output, not into the middleware's logs.

A token counts as leaked if any of these appears: the token itself, its 64 hex
characters, the hex of its UTF-8 bytes (a token stored as bytea), or the AES key its
successor is kept under (whoever has that key reads the successor). A full token hash
must not appear in returned details either. Positive controls make sure each place
searched really holds what we think (the dump holds the token hashes, the log holds the
errors we provoked, the CLI prints prefixes).

Only bind parameters carry tokens here (psycopg sends them apart from the SQL text), so
what reaches the server log comes from the package itself: its RAISEs, NOTICEs and the
errors it lets through. log_statement or log_min_duration_statement with the default
log_parameter_max_length would log bind parameters; that is deployment configuration
(docs/scaling.md says to keep log_parameter_max_length = 0 where tokens pass).

The QUICK and SOAK profiles are the same here: the scenarios are exhaustive, not sampled.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import re
import subprocess
from pathlib import Path

import httpx
import psycopg
import pytest
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from pyvault_tokens.asgi import TokenRefreshMiddleware
from tests.harness import CLI, prepare_database
from tests.servers import closed_port
from tests.tokens import make_token

TOKEN_SHAPE = re.compile(r"ovt_prod_[0-9a-fA-F]{5,}")
HEX64 = re.compile(r"(?<![0-9a-f])[0-9a-f]{64}(?![0-9a-f])")
SUCCESSOR_KEY_LABEL = b"pyvault-tokens/successor-key/v1:"


def forms(token: str) -> dict[str, str]:
    """Every form of a token that must never be found where it leaked."""
    raw = token.encode("utf-8")
    return {
        "token": token,
        "hex part": token[9:],
        "bytes as hex": raw.hex(),
        "successor key": hashlib.sha256(SUCCESSOR_KEY_LABEL + raw).hexdigest(),
    }


def leaks(text: str, tokens: set[str], *, hashes_too: bool = False) -> list[str]:
    found = []
    for token in tokens:
        for name, form in forms(token).items():
            if form in text:
                found.append(f"{name} of {token[:13]}…")
        if hashes_too and hashlib.sha256(token.encode()).hexdigest() in text:
            found.append(f"hash of {token[:13]}…")
    return found


def log_tail(path: Path, offset: int) -> str:
    with path.open("rb") as f:
        f.seek(offset)
        return f.read().decode("utf-8", "replace")


# -- the functions, the tables, the server log -------------------------------------------

def test_no_token_in_tables_results_notifications_notices_or_the_server_log(cluster, db_url):
    log = Path(cluster.pg.base_dir, "EmbeddedPostgresql.log")
    offset = log.stat().st_size
    seen: set[str] = set()
    returned: list[object] = []
    notices: list[str] = []
    with psycopg.connect(db_url, autocommit=True, row_factory=dict_row) as c, \
            psycopg.connect(db_url, autocommit=True) as listener:
        listener.execute("LISTEN pyvault_token_refresh")
        c.add_notice_handler(lambda d: notices.append(
            f"{d.severity}: {d.message_primary} {d.message_detail} {d.message_hint} {d.context}"))
        # Everything our session raises, at any level, reaches both the client and the log.
        c.execute("SET client_min_messages = debug1")
        c.execute("SET log_min_messages = debug1")
        c.execute("SET log_error_verbosity = verbose")

        def call(sql: str, *params) -> list[dict]:
            rows = c.execute(sql, params).fetchall() if params else c.execute(sql).fetchall()
            returned.append(rows)
            for r in rows:
                for v in r.values():
                    if isinstance(v, str) and re.fullmatch(r"ovt_prod_[0-9a-f]{64}", v):
                        seen.add(v)
            return rows

        with psycopg.connect(db_url, autocommit=True) as plain:
            issued = {kind: make_token(plain, expires_in, token_type, user="secrets")
                      for kind, expires_in, token_type in (
                          ("near", "3 days", "PRODUCTION"), ("far", "30 days", "PRODUCTION"),
                          ("key", "3 days", "API_KEY"), ("queued", "3 days", "PRODUCTION"),
                          ("revoke", "30 days", "PRODUCTION"), ("reuse", "3 days", "API"),
                          ("locked", "3 days", "PRODUCTION"), ("diag", "3 days", "PRODUCTION"))}
        seen |= set(issued.values())

        # Rotation, the kept successor handed out again, extension, status.
        new = call("SELECT * FROM auth.validate_and_refresh_api_token(%s)", issued["near"])
        call("SELECT * FROM auth.validate_and_refresh_api_token(%s)", issued["near"])
        call("SELECT * FROM auth.validate_production_api_token(%s)", new[0]["new_token"])
        call("SELECT * FROM auth.refresh_production_token_enhanced(%s, NULL, true)",
             issued["far"])
        call("SELECT * FROM auth.refresh_production_token_enhanced(%s)", issued["key"])
        call("SELECT * FROM auth.get_token_refresh_status(%s)", issued["far"])
        call("SELECT * FROM auth.get_token_refresh_status(%s)", issued["near"])
        # Diagnostics: a dry run and a real one.
        call("SELECT * FROM auth.test_token_refresh_system(%s)", issued["diag"])
        call("SELECT * FROM auth.test_token_refresh_system(%s, true)", issued["diag"])
        call("SELECT * FROM auth.test_token_refresh_system(%s)", issued["diag"][:-1] + "X")
        call("SELECT * FROM auth.validate_and_refresh_api_token(%s)", issued["diag"])
        # The batch (enqueue with NOTIFY, extend) and the committing job (RAISE NOTICE).
        c.execute("SELECT tests.bulk_tokens(5, 'API_KEY', '3 days', 'secrets-bulk')")
        call("SELECT * FROM auth.refresh_expiring_tokens_batch(p_dry_run => true)")
        call("SELECT * FROM auth.refresh_expiring_tokens_batch()")
        c.execute("CALL auth.refresh_expiring_tokens_job(10)")
        # Revocation, and reuse detection revoking a family.
        call("SELECT auth.revoke_api_token(%s, %s) AS revoked", issued["revoke"],
             "rotated by mistake")
        c.execute("SELECT auth.set_refresh_policy('API', p_grace_period => '1 second')")
        successor = call("SELECT * FROM auth.validate_and_refresh_api_token(%s)",
                         issued["reuse"])[0]["new_token"]
        call("SELECT * FROM auth.validate_production_api_token(%s)", successor)
        c.execute("SELECT tests.advance_clock('2 seconds')")  # past the 1 s grace
        reused = call("SELECT * FROM auth.validate_and_refresh_api_token(%s)", issued["reuse"])
        assert reused[0]["refresh_reason"] == "REUSE_DETECTED"
        # A refresh that meets a locked row (REFRESH_BUSY), and one that fails: its error
        # is recorded in an event.
        with psycopg.connect(db_url) as holder:
            holder.execute("SELECT 1 FROM auth.api_token_bridge WHERE token_hash ="
                           " sha256(convert_to(%s, 'UTF8')) FOR UPDATE", (issued["locked"],))
            busy = call("SELECT * FROM auth.validate_and_refresh_api_token(%s)",
                        issued["locked"])
            holder.rollback()
        assert busy[0]["refresh_reason"] == "REFRESH_BUSY"
        c.execute("ALTER TABLE auth.token_refresh_event ADD CONSTRAINT test_no_rotation"
                  " CHECK (outcome <> 'ROTATED') NOT VALID")
        try:
            failed = call("SELECT * FROM auth.validate_and_refresh_api_token(%s)",
                          issued["locked"])
        finally:
            c.execute("ALTER TABLE auth.token_refresh_event DROP CONSTRAINT test_no_rotation")
        assert failed[0]["refresh_reason"] == "REFRESH_FAILED"
        # Read-only: refresh deferred.
        with c.transaction():
            c.execute("SET TRANSACTION READ ONLY")
            call("SELECT * FROM auth.refresh_production_token_enhanced(%s)", issued["locked"])
        # The refresher's heartbeat takes tokens.
        call("SELECT auth.record_refresher_heartbeat('secrets', %s) AS n", sorted(seen))
        # Provoked errors, logged by the server with their statement (bind parameters are
        # not logged with it by default).
        for sql, params in (
                ("SELECT * FROM auth.generate_production_api_token(%s, %s, '{api:read}',"
                 " 'NO_SUCH_TYPE')", (b"\x00", b"\x00")),
                ("SELECT v.* FROM auth.validate_production_api_token(%s) AS v"
                 " WHERE 1 / 0 = 1", (issued["far"],)),
                ("SELECT * FROM auth.refresh_expiring_tokens_batch(p_batch_size => 0)", ())):
            with pytest.raises(psycopg.Error):
                c.execute(sql, params or None)
        dump = "\n".join(r["content"] for r in c.execute(
            "SELECT table_name, content FROM tests.table_dump()").fetchall())
        activity = "\n".join(r["query"] or "" for r in c.execute(
            "SELECT query FROM pg_stat_activity").fetchall())
        notifications = [n.payload for n in listener.notifies(timeout=0.5, stop_after=100)]

    assert len(seen) >= len(issued) + 4, "rotations handed out new tokens"
    assert not leaks(dump, seen), "a token is stored in a table"
    hashes = [hashlib.sha256(t.encode()).hexdigest() for t in issued.values()]
    assert all(h in dump for h in hashes), "positive control: the dump shows the token hashes"

    results = json.dumps([[{k: v for k, v in r.items() if k not in ("new_token", "token")}
                           for r in rows] for rows in returned], default=str,
                         ensure_ascii=False)
    assert not leaks(results, seen, hashes_too=True), "a result holds a token or its hash"
    assert re.search(r"ovt_prod_[0-9a-f]{4}…", results), "positive control: short prefixes"
    assert not TOKEN_SHAPE.search(results), "more than a 13-character prefix was returned"

    assert notifications, "the batch notified"
    assert not leaks("\n".join(notifications), seen, hashes_too=True)
    assert not any(HEX64.search(n) for n in notifications), "a hash in a notification"
    assert notices and not leaks("\n".join(notices), seen), "a notice holds a token"
    assert not leaks(activity, seen), "pg_stat_activity shows a token"

    server_log = log_tail(log, offset)
    for error in ("unknown user for this tenant", "division by zero",
                  "invalid batch arguments"):
        assert error in server_log, f"positive control: {error!r} is in the server log"
    assert not leaks(server_log, seen), "the server log holds a token"


# -- the CLI ------------------------------------------------------------------------------

def test_cli_demo_and_token_commands_print_no_token(cluster):
    log = Path(cluster.pg.base_dir, "EmbeddedPostgresql.log")
    offset = log.stat().st_size
    url = cluster.create_database("secrets_demo")  # empty: the demo migrates it itself
    env = {**os.environ, "DATABASE_URL": url}
    demo = subprocess.run([*CLI, "demo", "--database", url], capture_output=True, text=True,
                          env=env, timeout=300)
    assert demo.returncode == 0, demo.stderr
    output = demo.stdout + demo.stderr
    assert re.search(r"ovt_prod_[0-9a-f]{4}…", output), "positive control: prefixes shown"
    assert not TOKEN_SHAPE.search(output), "the demo printed more than a token's prefix"
    assert not HEX64.search(output), "the demo printed 64 hex characters"

    prepare_database(url)  # adds the tests schema (table_dump) to the demo's database
    with psycopg.connect(url, autocommit=True) as c:
        token = make_token(c, "3 days", user="cli")
        dump = "\n".join(r[1] for r in c.execute("SELECT * FROM tests.table_dump()"))
    assert not TOKEN_SHAPE.search(dump), "a token (more than a prefix) is stored"

    printed = []
    for command in (["validate", "-"], ["status", "-"], ["diagnose", "-"],
                    ["diagnose", "-", "--apply"], ["revoke", "-"], ["status", "-"]):
        done = subprocess.run([*CLI, *command], input=token + "\n", capture_output=True,
                              text=True, env=env, timeout=60)
        assert done.returncode in (0, 1), done.stderr
        printed.append(done.stdout + done.stderr)
    assert not leaks("\n".join(printed), {token}), "a CLI command printed the token"
    assert token[:13] in "\n".join(printed), "positive control: the prefix is shown"
    assert not TOKEN_SHAPE.search(log_tail(log, offset)), "the server log holds a token"


# -- the middleware -----------------------------------------------------------------------

async def _endpoint(request: Request) -> JSONResponse:
    return JSONResponse({"ok": True})


def test_middleware_logs_no_token(conn, db_url, caplog):
    caplog.set_level(logging.DEBUG)
    far = make_token(conn, "30 days", user="mw")
    near = make_token(conn, "3 days", user="mw")
    revoked = make_token(conn, "30 days", user="mw")
    conn.execute("SELECT auth.revoke_api_token(%s)", (revoked,))
    reuse = make_token(conn, "3 days", "API", user="mw")
    conn.execute("SELECT auth.set_refresh_policy('API', p_grace_period => '1 second')")
    tokens = {far, near, revoked, reuse}
    answers: list[httpx.Response] = []

    async def scenario() -> None:
        app = Starlette(routes=[Route("/", _endpoint)])
        async with AsyncConnectionPool(db_url, min_size=1, max_size=4, timeout=5) as pool, \
                AsyncConnectionPool(f"host=127.0.0.1 port={closed_port()} user=nobody"
                                    " dbname=nothing connect_timeout=1", min_size=0,
                                    max_size=1, timeout=1) as down:
            plain = TokenRefreshMiddleware(app, pool)
            explained = TokenRefreshMiddleware(app, pool, explain_errors=True)
            writer = TokenRefreshMiddleware(app, pool, required_scope="api:write",
                                            explain_errors=True)
            unavailable = TokenRefreshMiddleware(app, down)

            async def get(mw, token: str | None) -> httpx.Response:
                headers = {} if token is None else {"Authorization": f"Bearer {token}"}
                async with httpx.AsyncClient(transport=httpx.ASGITransport(app=mw),
                                             base_url="http://test") as client:
                    r = await client.get("/", headers=headers)
                answers.append(r)
                new = r.headers.get("x-new-token")
                if new:
                    tokens.add(new)
                return r

            for mw in (plain, explained):
                await get(mw, None)
                await get(mw, far.upper())                       # malformed: upper case
                await get(mw, " " + far)                          # padded (stripped: valid)
                await get(mw, far[:-1] + "g")                     # malformed: non-hex
                await get(mw, "ovt_prod_" + "0" * 64)             # unknown
                await get(mw, far)
                await get(mw, near)                               # refreshed: X-New-Token
                await get(mw, near)                               # ALREADY_REFRESHED
                await get(mw, revoked)
            await get(writer, far)                                # insufficient scope
            await get(unavailable, far)                           # 503
            successor = (await get(plain, reuse)).headers["x-new-token"]
            await get(plain, successor)
            async with pool.connection() as c:                # past the 1 s grace
                await c.execute("SELECT tests.advance_clock('2 seconds')")
            await get(explained, reuse)                           # reuse: family revoked
            await get(explained, successor)

    asyncio.run(scenario())
    statuses = [r.status_code for r in answers]
    assert {200, 401, 403, 503} <= set(statuses), statuses
    assert any(r.headers.get("x-new-token") for r in answers), "a refresh happened"

    lines = []
    for rec in caplog.records:
        lines.append(rec.getMessage())
        lines.append(repr({k: v for k, v in vars(rec).items()
                           if k not in ("msg", "args", "message")}))
        if rec.exc_text:
            lines.append(rec.exc_text)
    text = "\n".join(lines)
    assert "pyvault-tokens: token refreshed" in text, "positive control: refresh logged"
    assert "pyvault-tokens: token rejected" in text, "positive control: refusal logged"
    assert not leaks(text, tokens), "a log record holds a token"
    assert not TOKEN_SHAPE.search(text), "a log record holds more than a token's prefix"
    bodies = "\n".join(r.text for r in answers)
    assert not leaks(bodies, tokens), "a response body holds a token"
