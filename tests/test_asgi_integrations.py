"""The middleware inside Starlette and FastAPI apps: request.user / request.auth and
Starlette's @requires, the optional mode, per-route scopes without a global one,
FastAPI's security dependencies and OpenAPI, CORS in either order, and the Prometheus
metrics. Real HTTP through uvicorn against this module's real database.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Annotated

import httpx
import psycopg
import pytest
from fastapi import Depends, FastAPI, Security
from prometheus_client import CollectorRegistry
from psycopg_pool import AsyncConnectionPool
from starlette.applications import Starlette
from starlette.authentication import requires
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Mount, Route

from pyvault_tokens.asgi import (
    EXPOSE_HEADERS,
    PyvaultAuth,
    TokenRefreshMiddleware,
    require_scope,
    requires_scope,
)
from pyvault_tokens.fastapi import (
    SCHEME_NAME,
    Authenticated,
    MaybeAuthenticated,
    require,
    token_auth,
)
from pyvault_tokens.request_metrics import request_metrics
from tests.servers import CountingPool, UvicornThread, bearer, closed_port, pool_lifespan
from tests.tokens import make_token

INVALID_BODY = b'{"error":"invalid_token"}'
UNAUTHORIZED_BODY = b'{"error":"unauthorized"}'
SCOPE_BODY = b'{"error":"insufficient_scope"}'
ORIGIN = "https://app.example"


# -- the apps ------------------------------------------------------------------------------

async def me(request: Request) -> JSONResponse:
    user = request.user
    return JSONResponse({
        "is_authenticated": user.is_authenticated,
        "display_name": user.display_name,
        "user_hk": getattr(user, "user_hk", None),
        "tenant_hk": getattr(user, "tenant_hk", None),
        "scopes": list(request.auth.scopes),
    })


@requires("api:write")
async def starlette_write(request: Request) -> JSONResponse:
    return JSONResponse({"wrote": True})


@requires_scope("api:write")
async def pyvault_write(request: Request) -> JSONResponse:
    return JSONResponse({"wrote": True})


def fastapi_app() -> FastAPI:
    app = FastAPI(title="integrations")

    @app.get("/fa/me")
    async def fa_me(auth: Authenticated) -> dict:
        return auth.as_dict()

    @app.post("/fa/items")
    async def fa_items(auth: Annotated[PyvaultAuth, require("api:write")]) -> dict:
        return {"created": True, "user": auth.user_hk}

    @app.get("/fa/admin")
    async def fa_admin(auth: Annotated[PyvaultAuth, Security(token_auth,
                                                             scopes=["api:admin"])]) -> dict:
        return {"admin": True}

    @app.get("/fa/feed")
    async def fa_feed(auth: MaybeAuthenticated) -> dict:
        return {"personal": auth is not None}

    @app.get("/fa/legacy", dependencies=[Depends(require_scope("api:read"))])
    async def fa_legacy(request: Request) -> dict:
        return {"user": request.user.user_hk}

    app.router.routes.extend([
        Route("/me", me),
        Route("/starlette-write", starlette_write),
        Route("/pyvault-write", pyvault_write),
    ])
    return app


@contextlib.contextmanager
def client_for(db_url: str, *, cors: str | None = None, expose: tuple[str, ...] = (),
               pool_url: str | None = None, **options) -> Iterator[tuple[httpx.Client,
                                                                     CountingPool]]:
    """A FastAPI app behind the middleware (and CORSMiddleware outside or inside it), its
    pool opened in the lifespan; the client and the counting pool."""
    pool = AsyncConnectionPool(pool_url or db_url, min_size=1 if pool_url is None else 0,
                               max_size=4, timeout=1 if pool_url else 5, open=False)
    counting = CountingPool(pool)
    app = fastapi_app()
    app.router.lifespan_context = pool_lifespan(pool)
    options.setdefault("exempt_paths", ("/openapi.json", "/docs"))
    cors_options = {"allow_origins": [ORIGIN], "allow_methods": ["GET", "POST"],
                    "allow_headers": ["authorization", "content-type"],
                    "expose_headers": list(expose)}
    # add_middleware wraps: the middleware added last is the outermost.
    if cors == "inside":
        app.add_middleware(CORSMiddleware, **cors_options)
    app.add_middleware(TokenRefreshMiddleware, pool=counting, **options)
    if cors == "outside":
        app.add_middleware(CORSMiddleware, **cors_options)
    with UvicornThread(app) as server, httpx.Client(base_url=server.url, timeout=10) as client:
        yield client, counting


@pytest.fixture(scope="module")
def required(db_url: str) -> Iterator[tuple[httpx.Client, CountingPool]]:
    with client_for(db_url) as pair:
        yield pair


@pytest.fixture(scope="module")
def optional(db_url: str) -> Iterator[tuple[httpx.Client, CountingPool]]:
    with client_for(db_url, optional=True) as pair:
        yield pair


# -- request.user, request.auth, @requires ------------------------------------------------

def test_request_user_and_auth_are_set_as_authentication_middleware_does(required,
                                                                         conn) -> None:
    client, _ = required
    token = make_token(conn, "30 days", scope="{api:read,api:write}", user="carol")
    r = client.get("/me", headers=bearer(token))
    assert r.status_code == 200, r.text
    keys = conn.execute("SELECT encode(user_hk, 'hex'), encode(tenant_hk, 'hex')"
                        " FROM tests.bridge(%s)", (token,)).fetchone()
    assert r.json() == {"is_authenticated": True, "display_name": keys[0], "user_hk": keys[0],
                        "tenant_hk": keys[1], "scopes": ["api:read", "api:write"]}
    legacy = client.get("/fa/legacy", headers=bearer(token))
    assert legacy.json() == {"user": keys[0]}


def test_starlettes_requires_decorator_works_with_the_tokens_scopes(required, conn) -> None:
    client, _ = required
    reader = make_token(conn, "30 days", scope="{api:read}")
    writer = make_token(conn, "30 days", scope="{api:read,api:write}")
    assert client.get("/starlette-write", headers=bearer(writer)).json() == {"wrote": True}
    refused = client.get("/starlette-write", headers=bearer(reader))
    assert refused.status_code == 403, "Starlette's own 403, not a 500"
    ours = client.get("/pyvault-write", headers=bearer(reader))
    assert (ours.status_code, ours.content) == (403, SCOPE_BODY)
    assert ours.headers["www-authenticate"] == (
        'Bearer error="insufficient_scope", scope="api:write"')


# -- the optional mode -----------------------------------------------------------------------

def test_optional_mode_lets_anonymous_requests_through_but_not_bad_tokens(optional,
                                                                          conn) -> None:
    client, pool = optional
    before = pool.count
    anon = client.get("/me")
    assert anon.status_code == 200
    assert anon.json() == {"is_authenticated": False, "display_name": "", "user_hk": None,
                           "tenant_hk": None, "scopes": []}
    assert client.get("/fa/feed").json() == {"personal": False}
    assert pool.count == before, "an anonymous request costs no query"

    token = make_token(conn, "30 days")
    assert client.get("/fa/feed", headers=bearer(token)).json() == {"personal": True}
    assert client.get("/me", headers=bearer(token)).json()["is_authenticated"] is True

    for bad in ("nope", "ovt_prod_" + "ab" * 32):
        r = client.get("/fa/feed", headers=bearer(bad))
        assert (r.status_code, r.content) == (401, INVALID_BODY), bad
        assert r.headers["www-authenticate"] == 'Bearer error="invalid_token"'


@pytest.mark.parametrize("path,method", [("/fa/me", "GET"), ("/fa/items", "POST"),
                                         ("/fa/legacy", "GET"), ("/pyvault-write", "GET")])
def test_route_checks_answer_an_anonymous_request_with_the_middlewares_401(optional, path,
                                                                           method) -> None:
    client, _ = optional
    r = client.request(method, path)
    assert r.status_code == 401, "never FastAPI's 422 or 403"
    assert r.content == UNAUTHORIZED_BODY
    assert r.headers["www-authenticate"] == "Bearer"
    assert r.headers["cache-control"] == "no-store"
    assert r.headers["content-type"] == "application/json; charset=utf-8"
    assert "x-pyvault-denial" not in r.headers


def test_starlettes_requires_refuses_an_anonymous_request(optional) -> None:
    assert optional[0].get("/starlette-write").status_code == 403


def test_optional_paths_make_only_those_paths_optional(db_url, conn) -> None:
    with client_for(db_url, optional_paths=("/fa/feed",)) as (client, _):
        assert client.get("/fa/feed").json() == {"personal": False}
        r = client.get("/me")
        assert (r.status_code, r.content) == (401, UNAUTHORIZED_BODY)


# -- FastAPI security dependencies and OpenAPI -------------------------------------------------

def test_openapi_declares_the_bearer_scheme_and_each_routes_scopes(required) -> None:
    client, _ = required
    spec = client.get("/openapi.json").json()
    scheme = spec["components"]["securitySchemes"][SCHEME_NAME]
    assert scheme["type"] == "http" and scheme["scheme"] == "bearer"
    assert scheme["bearerFormat"].startswith("ovt_prod_")
    paths = spec["paths"]
    assert paths["/fa/me"]["get"]["security"] == [{SCHEME_NAME: []}]
    assert paths["/fa/items"]["post"]["security"] == [{SCHEME_NAME: ["api:write"]}]
    assert paths["/fa/admin"]["get"]["security"] == [{SCHEME_NAME: ["api:admin"]}]
    assert paths["/fa/feed"]["get"]["security"] == [{SCHEME_NAME: []}]
    for path in ("/fa/me", "/fa/items", "/fa/admin"):
        operation = next(iter(paths[path].values()))
        params = [p["name"].lower() for p in operation.get("parameters", [])]
        assert "authorization" not in params, "the token is a security scheme, not a header"
    docs = client.get("/docs")
    assert docs.status_code == 200 and "swagger-ui" in docs.text


def test_security_dependencies_check_scopes_from_the_validated_request(required,
                                                                       conn) -> None:
    client, pool = required
    reader = make_token(conn, "30 days", scope="{api:read}")
    writer = make_token(conn, "30 days", scope="{api:read,api:write}")
    assert client.get("/fa/me", headers=bearer(reader)).json()["scope"] == ["api:read"]
    before = pool.count
    r = client.post("/fa/items", headers=bearer(reader))
    assert (r.status_code, r.content) == (403, SCOPE_BODY)
    assert r.headers["www-authenticate"] == 'Bearer error="insufficient_scope", scope="api:write"'
    assert pool.count == before + 1, "the route check makes no second query"
    assert client.post("/fa/items", headers=bearer(writer)).json()["created"] is True
    admin = client.get("/fa/admin", headers=bearer(writer))
    assert (admin.status_code, admin.content) == (403, SCOPE_BODY)
    missing = client.get("/fa/me")
    assert (missing.status_code, missing.content) == (401, UNAUTHORIZED_BODY)
    assert missing.headers["www-authenticate"] == "Bearer"


# -- per-route scopes without a global one ------------------------------------------------------

def test_without_a_global_scope_each_route_decides(db_url, conn) -> None:
    reader = make_token(conn, "30 days", scope="{api:read}")
    write_only = make_token(conn, "30 days", scope="{api:write}")
    stranger = make_token(conn, "30 days", scope="{billing:read}")
    with client_for(db_url, required_scope=None) as (client, pool):
        assert client.get("/fa/me", headers=bearer(reader)).status_code == 200
        r = client.post("/fa/items", headers=bearer(reader))
        assert (r.status_code, r.content) == (403, SCOPE_BODY)

        before = pool.count
        ok = client.post("/fa/items", headers=bearer(write_only))
        assert ok.status_code == 200 and ok.json()["created"] is True
        assert pool.count - before == 2, "api:read refused (no write), then api:write held"
        assert client.get("/fa/me", headers=bearer(write_only)).json()["scope"] == ["api:write"]

        refused = client.get("/fa/me", headers=bearer(stranger))
        assert (refused.status_code, refused.content) == (403, SCOPE_BODY)
        challenge = refused.headers["www-authenticate"]
        assert challenge.startswith('Bearer error="insufficient_scope", scope="api:read ')
        assert "api:write" in challenge

    with client_for(db_url, required_scope=None,
                    accepted_scopes=("billing:read",)) as (client, _):
        assert client.get("/fa/me", headers=bearer(stranger)).status_code == 200
        assert client.get("/fa/me", headers=bearer(reader)).status_code == 403


def test_scope_arguments_are_checked() -> None:
    app = Starlette()
    pool = AsyncConnectionPool("postgresql://nobody@127.0.0.1:1/x", open=False)
    TokenRefreshMiddleware(app, pool, required_scope=None)  # no TypeError any more
    for bad in ({"required_scope": ""}, {"required_scope": "a b"},
                {"required_scope": None, "accepted_scopes": ()},
                {"required_scope": None, "accepted_scopes": ("ok", 'b"ad')}):
        with pytest.raises(TypeError):
            TokenRefreshMiddleware(app, pool, **bad)
    with pytest.raises(TypeError):
        require("")


# -- CORS, in either order ---------------------------------------------------------------------

def _exposed(response) -> list[str]:
    values = response.headers.get_list("access-control-expose-headers")
    assert len(values) <= 1, values
    return [v.strip().lower() for v in values[0].split(",")] if values else []


CORS_CASES = {
    # CORSMiddleware added last (outermost) with its own expose list that names ours.
    "cors outside": ("outside", (*EXPOSE_HEADERS, "X-Request-Id")),
    # CORSMiddleware outermost without an expose list: ours pass through it.
    "cors outside, no expose list": ("outside", ()),
    # CORSMiddleware added first (inside ours): we merge into what it sets.
    "cors inside": ("inside", ("X-Request-Id",)),
}


@pytest.mark.parametrize("case", list(CORS_CASES))
def test_a_browser_can_read_the_refresh_headers_and_preflights_need_no_token(db_url, conn,
                                                                             case) -> None:
    order, expose = CORS_CASES[case]
    with client_for(db_url, cors=order, expose=expose) as (client, pool):
        before = pool.count
        preflight = client.options("/fa/items", headers={
            "Origin": ORIGIN, "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type"})
        assert preflight.status_code == 200, preflight.text
        assert preflight.headers["access-control-allow-origin"] == ORIGIN
        assert "POST" in preflight.headers["access-control-allow-methods"]
        assert pool.count == before, "a preflight costs no query"

        due = make_token(conn, "3 days", scope="{api:read,api:write}")
        r = client.post("/fa/items", headers={**bearer(due), "Origin": ORIGIN})
        assert r.status_code == 200
        assert r.headers["access-control-allow-origin"] == ORIGIN
        assert r.headers["x-new-token"].startswith("ovt_prod_")
        exposed = _exposed(r)
        assert {h.lower() for h in EXPOSE_HEADERS} <= set(exposed), exposed
        if "X-Request-Id" in expose:
            assert "x-request-id" in exposed, "CORSMiddleware's own list is kept"
        assert len(exposed) == len(set(exposed)), "no name twice"

        fresh = make_token(conn, "30 days")
        plain = client.get("/fa/me", headers={**bearer(fresh), "Origin": ORIGIN})
        assert {h.lower() for h in EXPOSE_HEADERS} <= set(_exposed(plain))
        no_origin = client.get("/fa/me", headers=bearer(fresh))
        assert "access-control-expose-headers" not in no_origin.headers

        refused = client.get("/fa/me", headers={"Origin": ORIGIN})
        assert (refused.status_code, refused.content) == (401, UNAUTHORIZED_BODY)
        if order == "outside":
            # Outside, CORSMiddleware decorates the middleware's refusals too.
            assert refused.headers["access-control-allow-origin"] == ORIGIN


# -- metrics -------------------------------------------------------------------------------------

def _sample(registry: CollectorRegistry, name: str, **labels) -> float:
    return registry.get_sample_value(name, labels) or 0.0


def test_outcomes_and_latency_are_counted_after_real_requests(db_url, conn) -> None:
    registry = CollectorRegistry()
    fresh = make_token(conn, "30 days", scope="{api:read}")
    due = make_token(conn, "3 days", scope="{api:read}")
    with client_for(db_url, registry=registry, exempt_paths=("/openapi.json",)) as (client, _):
        assert client.get("/fa/me", headers=bearer(fresh)).status_code == 200
        assert client.get("/fa/me", headers=bearer(fresh)).status_code == 200
        assert client.get("/fa/me", headers=bearer(due)).headers["x-new-token"]
        assert client.get("/fa/me").status_code == 401                          # no token
        assert client.get("/fa/me", headers=bearer("nope")).status_code == 401  # no query
        assert client.get("/fa/me", headers=bearer("ovt_prod_" + "ab" * 32)).status_code == 401
        assert client.post("/fa/items", headers=bearer(fresh)).status_code == 403  # route
        assert client.get("/openapi.json").status_code == 200                    # not counted
    with client_for(db_url, registry=registry, required_scope="api:admin") as (client, _):
        assert client.get("/fa/me", headers=bearer(fresh)).status_code == 403    # database
    dead = f"host=127.0.0.1 port={closed_port()} user=nobody dbname=x connect_timeout=1"
    with client_for(db_url, registry=registry, pool_url=dead) as (client, _):
        assert client.get("/fa/me", headers=bearer(fresh)).status_code == 503

    counts = {o: _sample(registry, "pyvault_requests_total", outcome=o)
              for o in ("ok", "refreshed", "401", "403", "503", "anonymous")}
    assert counts == {"ok": 2, "refreshed": 1, "401": 3, "403": 2, "503": 1, "anonymous": 0}
    # Every request that reached the database is timed, the failed one too.
    assert _sample(registry, "pyvault_validation_seconds_count") == 7
    total = _sample(registry, "pyvault_validation_seconds_sum")
    assert 0 < total < 30
    assert _sample(registry, "pyvault_validation_seconds_bucket", le="+Inf") == 7


def test_metrics_are_optional_and_shared_per_registry() -> None:
    assert request_metrics(False) is None
    registry = CollectorRegistry()
    assert request_metrics(registry) is request_metrics(registry)
    app = Starlette(routes=[Mount("/", Starlette())])
    pool = AsyncConnectionPool("postgresql://nobody@127.0.0.1:1/x", open=False)
    a = TokenRefreshMiddleware(app, pool, registry=registry)
    b = TokenRefreshMiddleware(app, pool, registry=registry)
    assert a.metrics is b.metrics
    assert TokenRefreshMiddleware(app, pool, registry=False).metrics is None


def test_the_anonymous_outcome_is_counted(db_url) -> None:
    registry = CollectorRegistry()
    with client_for(db_url, registry=registry, optional=True) as (client, _):
        assert client.get("/fa/feed").json() == {"personal": False}
        assert client.get("/fa/me").status_code == 401  # the route's 401
    assert _sample(registry, "pyvault_requests_total", outcome="anonymous") == 1
    assert _sample(registry, "pyvault_requests_total", outcome="401") == 1
    assert _sample(registry, "pyvault_validation_seconds_count") == 0


def test_validate_sql_is_the_api_modules_text(conn) -> None:
    from pyvault_tokens import api, asgi

    assert asgi.VALIDATE_SQL is api.VALIDATE_AND_REFRESH_SQL
    token = make_token(conn, "30 days")
    with conn.cursor(row_factory=psycopg.rows.dict_row) as cur:
        cur.execute(asgi.VALIDATE_SQL, {"token": token, "scope": "api:read"})
        assert cur.fetchone()["is_valid"] is True
