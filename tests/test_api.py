"""pyvault_tokens.api: each SQL text once, and its sync and async twins agree."""

from __future__ import annotations

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
THIN = ("asgi.py", "client.py", "fastapi.py", "request_metrics.py")
AUTH_CALL = re.compile(r"\bauth\.[a-z_]+\s*\(")


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
