"""pyvault_tokens.api: each SQL text once, and its sync and async twins agree."""

from __future__ import annotations

import ast
import asyncio
import inspect
import re
from pathlib import Path

import psycopg
import pytest

from pyvault_tokens import api
from tests.tokens import make_token

PACKAGE = Path(api.__file__).parent
# Modules that must go through pyvault_tokens.api for every auth.* call.
THIN = ("asgi.py", "middleware.py", "responses.py", "routes.py", "identity.py", "client.py",
        "fastapi.py", "request_metrics.py")
AUTH_CALL = re.compile(r"\bauth\.[a-z_]+\s*\(")
# Modules with SQL of their own, none of it about auth.*: every auth function and every
# monitoring view goes through pyvault_tokens.api. What they may still write: SQL about
# other things (the CLI's pg_cron calls in the cron database, where the auth schema may
# not exist, so pg_cron is looked up in pg_depend there; the metrics' statement_timeout;
# the refresher's LISTEN; the dashboard's now()), and prose that names an auth object.
CALLERS = ("refresher.py", "cli.py", "demo.py", "metrics.py", "alerts.py", "dashboard.py")
AUTH_NAME = re.compile(r"\bauth\.[a-z_]+")
SQL_WORD = re.compile(r"\b(SELECT|FROM|JOIN|CALL|INSERT|UPDATE|DELETE|LISTEN|NOTIFY)\b")


def _string_literals(source: str) -> list[str]:
    """Every string literal of a module (f-strings' literal parts too), docstrings left out."""
    tree = ast.parse(source)
    docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                  if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef
                                | ast.AsyncFunctionDef)
                  and node.body and isinstance(node.body[0], ast.Expr)
                  and isinstance(node.body[0].value, ast.Constant)}
    return [node.value for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str)
            and id(node) not in docstrings]


def test_every_sql_text_is_written_once() -> None:
    texts = {name: value for name, value in vars(api).items() if name.endswith("_SQL")}
    assert len(set(texts.values())) == len(texts)
    source = (PACKAGE / "api.py").read_text(encoding="utf-8")
    for function in sorted({m.group(0) for m in AUTH_CALL.finditer(source)}):
        assert source.count(function) == 1, f"{function} is written more than once in api.py"


@pytest.mark.parametrize("module", THIN)
def test_the_http_layer_holds_no_sql_of_its_own(module) -> None:
    source = (PACKAGE / module).read_text(encoding="utf-8")
    assert "SELECT" not in source.upper().replace("SELECTED", ""), module
    assert not AUTH_CALL.search(source.replace("auth.validate_and_refresh_api_token``", "")), \
        module


@pytest.mark.parametrize("module", CALLERS)
def test_callers_hold_no_auth_sql_of_their_own(module) -> None:
    literals = _string_literals((PACKAGE / module).read_text(encoding="utf-8"))
    # Adjacent literals are one constant to ast, so a SQL text split over lines is whole.
    auth_sql = [text for text in literals if AUTH_NAME.search(text) and SQL_WORD.search(text)]
    assert auth_sql == [], f"{module} writes auth.* SQL itself: use pyvault_tokens.api"


def test_the_check_finds_auth_sql_where_there_is_some() -> None:
    """The check above is not vacuous: api.py itself fails it, and so did the old callers."""
    literals = _string_literals((PACKAGE / "api.py").read_text(encoding="utf-8"))
    texts = [name for name in vars(api) if name.endswith("_SQL")]
    assert sum(bool(AUTH_NAME.search(t) and SQL_WORD.search(t)) for t in literals) == len(texts)
    old_refresher = ('x = ("SELECT auth.record_refresher_heartbeat(p_instance =>'
                     ' %(instance)s::text," " p_tokens => %(tokens)s::text[])")')
    assert any(AUTH_NAME.search(t) and SQL_WORD.search(t) for t in _string_literals(old_refresher))


def test_the_monitoring_views_are_read_through_api_once() -> None:
    source = (PACKAGE / "api.py").read_text(encoding="utf-8")
    for view in ("refresh_metrics_hourly", "token_expiry_forecast", "tenant_usage_patterns",
                 "refresh_alerts", "refresh_batch_runs"):
        assert source.count(f"FROM auth.{view} AS") == 1, view


def test_every_call_has_an_async_twin_with_the_same_parameters() -> None:
    calls = [name for name, f in vars(api).items()
             if inspect.isfunction(f) and not name.startswith("_") and f.__module__ == api.__name__
             and not name.endswith("_async")]
    assert len(calls) >= 14
    for name in calls:
        twin = getattr(api, f"{name}_async")
        assert inspect.iscoroutinefunction(twin), name
        sync_params = list(inspect.signature(getattr(api, name)).parameters)
        assert list(inspect.signature(twin).parameters) == sync_params, name


def test_sync_and_async_answers_agree(db_url: str, conn: psycopg.Connection) -> None:
    token = make_token(conn, "30 days")
    sync_status = api.status(conn, token)
    sync_check = api.validate(conn, token)

    async def run() -> tuple[dict, dict, dict]:
        async with await psycopg.AsyncConnection.connect(db_url, autocommit=True) as aconn:
            return (await api.status_async(aconn, token), await api.validate_async(aconn, token),
                    await api.validate_and_refresh_async(aconn, token, "api:write"))

    async_status, async_check, scoped = asyncio.run(run())
    assert async_status["is_valid"] is sync_status["is_valid"] is True
    assert async_status["expires_at"] == sync_status["expires_at"]
    assert async_check == sync_check
    assert (scoped["is_valid"], scoped["refresh_reason"]) == (False, "INSUFFICIENT_SCOPE")


def test_the_calls_the_refresher_cli_and_demo_need(conn: psycopg.Connection) -> None:
    token = make_token(conn, "30 days")
    assert api.record_refresher_heartbeat(conn, "test:instance", [token, "nope"]) == 1
    before = api.set_refresh_policy(conn, "API")
    changed = api.set_refresh_policy(conn, "API", reuse_action="REJECT")
    assert changed["reuse_action"] == "REJECT"
    restored = api.set_refresh_policy(conn, "API", reuse_action=before["reuse_action"])
    assert {k: v for k, v in restored.items() if k != "updated_at"} == {
        k: v for k, v in before.items() if k != "updated_at"}
    with pytest.raises(TypeError):
        api.set_refresh_policy(conn, "API", grace="1 minute")
    with pytest.raises(psycopg.errors.FeatureNotSupported):
        api.schedule(conn)  # pg_cron lives in another database of the test cluster
