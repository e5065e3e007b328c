"""Privileges, tested as the roles themselves (SET ROLE), and a search_path hijack.

- pyvault_api reads no table and no view, and can call only the token functions it is
  meant for: none of the admin functions (issue, revoke, batch and job, schedule,
  diagnostics, policy, registration), the monitoring function, the refresher's heartbeat,
  or any ``_`` helper.
- pyvault_refresher can do the refresher service's work (status, refresh, heartbeat,
  LISTEN) and nothing else: no validation, no admin or monitoring function, no table
  (not even the outbox or the heartbeat tables) and no view.
- pyvault_monitor reads the monitoring views and no table, and calls no token function.
- pyvault_admin reads no table either; every ``_`` helper is closed to every role, and
  no function of the package is executable by PUBLIC.
- search_path hijack: a schema ``evil`` shadows ``sha256``, ``now``, ``convert_to``,
  ``length``, ``octet_length``, ``left``, ``gen_random_bytes`` and the ``=`` / ``<>`` /
  ``>=`` operators the functions rely on, is granted to the roles and put first on the
  search_path (pg_catalog explicitly after it). Every public function must answer
  exactly as without the hijack: both answers are taken in one transaction (so now()
  is the same), the first rolled back to a savepoint before the second.

The QUICK and SOAK profiles are the same here: these checks are exhaustive, not sampled.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import psycopg
import pytest
from psycopg.rows import dict_row

from pyvault_tokens.migrate import migrate
from tests.tokens import make_token

API, ADMIN, MONITOR = "pyvault_api", "pyvault_admin", "pyvault_monitor"
REFRESHER = "pyvault_refresher"
ROLES = (API, ADMIN, MONITOR, REFRESHER)
MONITOR_VIEWS = ("refresh_metrics_hourly", "token_expiry_forecast", "token_usage_patterns",
                 "tenant_usage_patterns", "refresh_alerts")
# Everything pyvault_api may execute. A new grant to the API role must be added here
# deliberately: every application's login role holds it.
API_FUNCTIONS = {
    "auth.validate_production_api_token(text,text)",
    "auth.validate_and_refresh_api_token(text,text)",
    "auth.refresh_production_token_enhanced(text,integer,boolean,text)",
    "auth.get_token_refresh_status(text)",
}
# Everything pyvault_refresher may execute: what pyvault_tokens.refresher calls.
REFRESHER_FUNCTIONS = {
    "auth.refresh_production_token_enhanced(text,integer,boolean,text)",
    "auth.get_token_refresh_status(text)",
    "auth.record_refresher_heartbeat(text,text[])",
}
HEARTBEAT_CALL = "SELECT auth.record_refresher_heartbeat('priv-refresher', ARRAY[%(token)s]) AS n"
# Admin calls, each with arguments it would accept from an admin.
ADMIN_CALLS = {
    "generate": "SELECT * FROM auth.generate_production_api_token(%(user_hk)s, %(tenant_hk)s)",
    "revoke": "SELECT auth.revoke_api_token(%(token)s)",
    "batch": "SELECT * FROM auth.refresh_expiring_tokens_batch(p_dry_run => true)",
    "job": "CALL auth.refresh_expiring_tokens_job()",
    "schedule": "SELECT auth.schedule_token_refresh()",
    "unschedule": "SELECT auth.unschedule_token_refresh()",
    "cron_jobs": "SELECT * FROM auth.token_refresh_cron_jobs('0 */6 * * *', 'x')",
    "diagnostics": "SELECT * FROM auth.test_token_refresh_system(%(token)s)",
    "set_refresh_policy": "SELECT auth.set_refresh_policy('API', p_grace_period => '1 day')",
    "register_tenant": "SELECT auth.register_tenant('intruder')",
    "register_user": "SELECT auth.register_user(%(tenant_hk)s, 'intruder')",
}
TOKEN_FUNCTION_CALLS = {
    "validate": "SELECT * FROM auth.validate_production_api_token(%(token)s)",
    "validate_and_refresh": "SELECT * FROM auth.validate_and_refresh_api_token(%(token)s)",
    "refresh": "SELECT * FROM auth.refresh_production_token_enhanced(%(token)s)",
    "status": "SELECT * FROM auth.get_token_refresh_status(%(token)s)",
}
# What the refresher service runs, as pyvault_tokens.refresher runs it.
REFRESHER_CALLS = {
    "status": "SELECT * FROM auth.get_token_refresh_status(p_token => %(token)s::text)",
    "refresh": "SELECT * FROM auth.refresh_production_token_enhanced(p_token => %(near)s::text,"
               " p_threshold_days => NULL::integer, p_force => false, p_trigger => 'SERVICE')",
    "heartbeat": HEARTBEAT_CALL,
    "listen": "LISTEN pyvault_token_refresh",
}


@pytest.fixture(scope="module")
def admin_conn(db_url) -> Iterator[psycopg.Connection]:
    """The superuser who owns the package (and the data the roles look at)."""
    with psycopg.connect(db_url, autocommit=True, row_factory=dict_row) as c:
        yield c


@pytest.fixture(scope="module")
def data(admin_conn) -> dict:
    """A few tokens, refresh events and usage, so that the views have rows to show."""
    with psycopg.connect(admin_conn.info.dsn, autocommit=True) as c:
        far = make_token(c, "30 days", user="priv")
        near = make_token(c, "3 days", user="priv")
        rotated = make_token(c, "3 days", user="priv")
        revoked = make_token(c, "30 days", user="priv")
        c.execute("SELECT * FROM auth.validate_and_refresh_api_token(%s)", (rotated,))
        c.execute("SELECT auth.revoke_api_token(%s)", (revoked,))
        c.execute("SELECT tests.bulk_tokens(20, 'API_KEY', '3 days', 'priv-bulk')")
        c.execute("SELECT * FROM auth.refresh_expiring_tokens_batch()")
        keys = c.execute("SELECT user_hk, tenant_hk FROM auth.user_h WHERE user_bk = 'priv'"
                         ).fetchone()
    return {"far": far, "near": near, "rotated": rotated, "revoked": revoked,
            "token": far, "user_hk": keys[0], "tenant_hk": keys[1]}


def relations(conn: psycopg.Connection, kinds: str) -> list[str]:
    return [r["name"] for r in conn.execute(
        "SELECT format('auth.%%I', c.relname) AS name FROM pg_class AS c"
        " WHERE c.relnamespace = 'auth'::regnamespace AND c.relkind = ANY(%s)"
        " ORDER BY 1", (list(kinds),)).fetchall()]


def refused_as(conn: psycopg.Connection, role: str, sql: str, params=None) -> str | None:
    """Run sql as role in a transaction that is rolled back; the SQLSTATE it failed
    with, or None when it ran."""
    try:
        with conn.transaction(force_rollback=True):
            conn.execute(f"SET LOCAL ROLE {role}")
            cur = conn.execute(sql, params)
            if cur.description:
                cur.fetchall()
    except psycopg.Error as exc:
        return exc.sqlstate
    return None


# -- catalog invariants -------------------------------------------------------------------

def test_no_role_reads_or_writes_a_table_and_nothing_is_executable_by_public(admin_conn):
    tables = relations(admin_conn, "rpS")
    assert "auth.api_token_bridge" in tables
    granted = admin_conn.execute(
        "SELECT r.role, t.name FROM unnest(%s::text[]) AS r (role),"
        " unnest(%s::text[]) AS t (name)"
        " WHERE has_table_privilege(r.role, t.name::regclass,"
        "       'SELECT,INSERT,UPDATE,DELETE,TRUNCATE,REFERENCES,TRIGGER')"
        "    OR has_any_column_privilege(r.role, t.name::regclass, 'SELECT,INSERT,UPDATE')",
        (list(ROLES), tables)).fetchall()
    assert granted == [], "a role holds a privilege on a table"
    public = admin_conn.execute(
        "SELECT p.oid::regprocedure::text AS f FROM pg_proc AS p"
        " WHERE p.pronamespace = 'auth'::regnamespace"
        "   AND has_function_privilege('public', p.oid, 'EXECUTE')").fetchall()
    assert public == [], "executable by PUBLIC"


def test_helpers_are_closed_to_every_role(admin_conn):
    helpers = admin_conn.execute(
        "SELECT p.oid::regprocedure::text AS f, r.role FROM pg_proc AS p,"
        " unnest(%s::text[]) AS r (role)"
        " WHERE p.pronamespace = 'auth'::regnamespace AND p.proname LIKE '\\_%%'"
        "   AND has_function_privilege(r.role, p.oid, 'EXECUTE')", (list(ROLES),)).fetchall()
    assert helpers == []
    n = admin_conn.execute("SELECT count(*) AS n FROM pg_proc WHERE pronamespace ="
                           " 'auth'::regnamespace AND proname LIKE '\\_%%'").fetchone()["n"]
    assert n >= 10, "the helpers were found"


def executable_by(conn: psycopg.Connection, role: str) -> set[str]:
    return {r["f"].replace(", ", ",") for r in conn.execute(
        "SELECT p.oid::regprocedure::text AS f FROM pg_proc AS p"
        " WHERE p.pronamespace = 'auth'::regnamespace"
        "   AND has_function_privilege(%s, p.oid, 'EXECUTE')", (role,)).fetchall()}


def test_the_api_role_may_execute_exactly_its_functions(admin_conn):
    assert executable_by(admin_conn, API) == API_FUNCTIONS


def test_the_refresher_role_may_execute_exactly_its_functions(admin_conn):
    assert executable_by(admin_conn, REFRESHER) == REFRESHER_FUNCTIONS


def test_migrate_takes_the_heartbeat_back_from_a_database_migrated_before_0006(cluster):
    """CREATE OR REPLACE keeps grants: an older database's API grant must not survive."""
    url = cluster.fresh_database("priv_upgrade")
    sig = "auth.record_refresher_heartbeat(text, text[])"
    with psycopg.connect(url, autocommit=True) as c:
        c.execute(f"GRANT EXECUTE ON FUNCTION {sig} TO pyvault_api")
        migrate(url)
        held = c.execute("SELECT has_function_privilege(r, %s, 'EXECUTE')"
                         " FROM unnest(%s::text[]) AS r ORDER BY r",
                         (sig, [API, REFRESHER])).fetchall()
    assert held == [(False,), (True,)]


# -- as the roles -------------------------------------------------------------------------

def test_api_role_reads_no_table_and_no_view(admin_conn, data):
    relations_ = relations(admin_conn, "rpvmS")
    assert {f"auth.{v}" for v in MONITOR_VIEWS} <= set(relations_)
    for name in relations_:
        assert refused_as(admin_conn, API, f"SELECT * FROM {name} LIMIT 1") == "42501", name


def test_api_role_cannot_call_admin_functions(admin_conn, data):
    for what, sql in {**ADMIN_CALLS,
                      "alerts": "SELECT * FROM auth.get_refresh_alerts()",
                      "helper": "SELECT * FROM auth._refresh_token(%(token)s, NULL, true,"
                                " 'FORCED')",
                      "heartbeat": HEARTBEAT_CALL,
                      }.items():
        assert refused_as(admin_conn, API, sql, data) == "42501", what
    # The token the API role tried to revoke and diagnose is untouched.
    row = admin_conn.execute("SELECT * FROM auth.get_token_refresh_status(%s)",
                             (data["far"],)).fetchone()
    assert row["is_valid"] and not row["has_successor"]


def test_api_role_calls_its_own_functions(admin_conn, data):
    for what, sql in TOKEN_FUNCTION_CALLS.items():
        assert refused_as(admin_conn, API, sql, data) is None, what


def test_refresher_role_does_the_refreshers_work(admin_conn, data):
    for what, sql in REFRESHER_CALLS.items():
        assert refused_as(admin_conn, REFRESHER, sql, data) is None, what
    with admin_conn.transaction(force_rollback=True):
        admin_conn.execute(f"SET LOCAL ROLE {REFRESHER}")
        refreshed = admin_conn.execute(REFRESHER_CALLS["refresh"], data).fetchone()
        held = admin_conn.execute(HEARTBEAT_CALL, data).fetchone()
    assert refreshed["success"] and refreshed["new_token"], "the near token was rotated"
    assert held["n"] == 1, "the heartbeat knows the token"


def test_refresher_role_reads_nothing_and_calls_nothing_else(admin_conn, data):
    relations_ = relations(admin_conn, "rpvmS")
    assert {"auth.token_refresh_outbox", "auth.refresher_heartbeat",
            "auth.api_token_bridge"} <= set(relations_)
    for name in relations_:
        assert refused_as(admin_conn, REFRESHER, f"SELECT * FROM {name} LIMIT 1") == "42501", name
    assert refused_as(admin_conn, REFRESHER,
                      "UPDATE auth.token_refresh_outbox SET processed_at = now()") == "42501"
    others = {**ADMIN_CALLS,
              "validate": TOKEN_FUNCTION_CALLS["validate"],
              "validate_and_refresh": TOKEN_FUNCTION_CALLS["validate_and_refresh"],
              "alerts": "SELECT * FROM auth.get_refresh_alerts()",
              "helper": "SELECT * FROM auth._refresh_token(%(token)s, NULL, true, 'FORCED')"}
    for what, sql in others.items():
        assert refused_as(admin_conn, REFRESHER, sql, data) == "42501", what


def test_admin_role_calls_admin_functions_and_reads_no_table(admin_conn, data):
    for what, sql in ADMIN_CALLS.items():
        if what in ("schedule", "unschedule", "job"):
            continue  # pg_cron is not in this database; the job commits (no rollback)
        assert refused_as(admin_conn, ADMIN, sql, data) is None, what
    for name in relations(admin_conn, "rpS"):
        assert refused_as(admin_conn, ADMIN, f"SELECT * FROM {name} LIMIT 1") == "42501", name


def test_monitor_role_reads_the_views_and_no_table(admin_conn, data):
    for view in MONITOR_VIEWS:
        with admin_conn.transaction(force_rollback=True):
            admin_conn.execute(f"SET LOCAL ROLE {MONITOR}")
            rows = admin_conn.execute(f"SELECT * FROM auth.{view}").fetchall()
        assert isinstance(rows, list), view
    for view in relations(admin_conn, "vm"):
        assert refused_as(admin_conn, MONITOR, f"SELECT * FROM {view} LIMIT 1") is None, view
    for name in relations(admin_conn, "rpS"):
        assert refused_as(admin_conn, MONITOR, f"SELECT * FROM {name} LIMIT 1") == "42501", name
    for what, sql in {**TOKEN_FUNCTION_CALLS, **ADMIN_CALLS}.items():
        assert refused_as(admin_conn, MONITOR, sql, data) == "42501", what


# -- search_path hijack -------------------------------------------------------------------

EVIL = r"""
DROP SCHEMA IF EXISTS evil CASCADE;
CREATE SCHEMA evil;
CREATE FUNCTION evil.sha256(bytea) RETURNS bytea LANGUAGE sql AS $$ SELECT '\x00'::bytea $$;
CREATE FUNCTION evil.now() RETURNS timestamptz LANGUAGE sql
AS $$ SELECT '2000-01-01 00:00:00+00'::timestamptz $$;
CREATE FUNCTION evil.convert_to(text, name) RETURNS bytea LANGUAGE sql
AS $$ SELECT '\x00'::bytea $$;
CREATE FUNCTION evil.length(text) RETURNS integer LANGUAGE sql AS $$ SELECT 73 $$;
CREATE FUNCTION evil.octet_length(text) RETURNS integer LANGUAGE sql AS $$ SELECT 73 $$;
CREATE FUNCTION evil.left(text, integer) RETURNS text LANGUAGE sql
AS $$ SELECT 'ovt_prod_'::text $$;
CREATE FUNCTION evil.gen_random_bytes(integer) RETURNS bytea LANGUAGE sql
AS $$ SELECT '\x00000000000000000000000000000000'::bytea $$;
CREATE FUNCTION evil.always(bytea, bytea) RETURNS boolean LANGUAGE sql AS $$ SELECT true $$;
CREATE FUNCTION evil.always(text, text) RETURNS boolean LANGUAGE sql AS $$ SELECT true $$;
CREATE FUNCTION evil.never(integer, integer) RETURNS boolean LANGUAGE sql AS $$ SELECT false $$;
CREATE FUNCTION evil.never(timestamptz, timestamptz) RETURNS boolean LANGUAGE sql
AS $$ SELECT false $$;
CREATE OPERATOR evil.= (LEFTARG = bytea, RIGHTARG = bytea, FUNCTION = evil.always);
CREATE OPERATOR evil.= (LEFTARG = text, RIGHTARG = text, FUNCTION = evil.always);
CREATE OPERATOR evil.<> (LEFTARG = integer, RIGHTARG = integer, FUNCTION = evil.never);
CREATE OPERATOR evil.>= (LEFTARG = timestamptz, RIGHTARG = timestamptz, FUNCTION = evil.never);
GRANT USAGE ON SCHEMA evil TO pyvault_api, pyvault_admin, pyvault_monitor, pyvault_refresher;
GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA evil
TO pyvault_api, pyvault_admin, pyvault_monitor, pyvault_refresher;
"""
HIJACK = "SET LOCAL search_path = evil, public, pg_catalog"
_TOKEN_RE = re.compile(r"ovt_prod_[0-9a-f]{64}")
_PREFIX_RE = re.compile(r"ovt_prod_[0-9a-f]{4}…")


@pytest.fixture(scope="module")
def evil(admin_conn) -> Iterator[None]:
    admin_conn.execute(EVIL)
    try:
        yield
    finally:
        admin_conn.execute("DROP SCHEMA evil CASCADE")


def _normalize(value):
    """New secrets (and a new token's api_token_hk) are random: compare their shape, not
    their value. duration_ms is a stopwatch. Everything else must match exactly."""
    if isinstance(value, dict):
        return {k: _normalize(v) for k, v in value.items()
                if k not in ("duration_ms", "api_token_hk")}
    if isinstance(value, list | tuple):
        return [_normalize(v) for v in value]
    if isinstance(value, str):
        return _PREFIX_RE.sub("<prefix>", _TOKEN_RE.sub("<token>", value))
    return value


def answers_with_and_without_hijack(conn: psycopg.Connection, role: str, sql: str, params):
    """Both answers in one transaction (one now()); the first is rolled back first."""
    with conn.transaction(force_rollback=True):
        conn.execute(f"SET LOCAL ROLE {role}")
        with conn.transaction(force_rollback=True):
            plain = conn.execute(sql, params).fetchall()
        with conn.transaction(force_rollback=True):
            conn.execute(HIJACK)
            assert conn.execute("SELECT now() AS t").fetchone()["t"].year == 2000
            hijacked = conn.execute(sql, params).fetchall()
    return _normalize(plain), _normalize(hijacked)


def test_the_hijack_is_real_for_unqualified_sql(admin_conn, evil):
    with admin_conn.transaction(force_rollback=True):
        admin_conn.execute(f"SET LOCAL ROLE {API}")
        admin_conn.execute(HIJACK)
        row = admin_conn.execute(
            "SELECT now() AS now, sha256('\\x01'::bytea) AS h, length('x') AS n,"
            " 'a'::text = 'b'::text AS eq, 1 <> 2 AS ne,"
            " left('abc', 1) AS l").fetchone()
    assert row["now"].year == 2000 and row["h"] == b"\x00" and row["n"] == 73
    assert row["eq"] is True and row["ne"] is False and row["l"] == "ovt_prod_"


HIJACK_CASES = [
    # (role, sql, which token)
    (API, "SELECT * FROM auth.validate_production_api_token(%(t)s, 'api:read')", "far"),
    (API, "SELECT * FROM auth.validate_production_api_token(%(t)s, 'api:write')", "far"),
    (API, "SELECT * FROM auth.validate_production_api_token(%(t)s, 'api:read')", "unknown"),
    (API, "SELECT * FROM auth.validate_production_api_token(%(t)s, 'api:read')", "malformed"),
    (API, "SELECT * FROM auth.validate_production_api_token(%(t)s, 'api:read')", "upper"),
    (API, "SELECT * FROM auth.validate_production_api_token(%(t)s, 'api:read')", "revoked"),
    (API, "SELECT * FROM auth.validate_production_api_token(%(t)s, 'api:read')", "null"),
    (API, "SELECT * FROM auth.validate_and_refresh_api_token(%(t)s, 'api:read')", "near"),
    (API, "SELECT * FROM auth.validate_and_refresh_api_token(%(t)s, 'api:read')", "far"),
    (API, "SELECT * FROM auth.validate_and_refresh_api_token(%(t)s, 'api:read')", "rotated"),
    (API, "SELECT * FROM auth.validate_and_refresh_api_token(%(t)s, 'api:write')", "near"),
    (API, "SELECT * FROM auth.validate_and_refresh_api_token(%(t)s, 'api:read')", "malformed"),
    (API, "SELECT * FROM auth.refresh_production_token_enhanced(%(t)s)", "far"),
    (API, "SELECT * FROM auth.refresh_production_token_enhanced(%(t)s)", "near"),
    (API, "SELECT * FROM auth.refresh_production_token_enhanced(%(t)s, NULL, true)", "far"),
    (API, "SELECT * FROM auth.refresh_production_token_enhanced(%(t)s, 7, false, 'SERVICE')",
     "rotated"),
    (API, "SELECT * FROM auth.refresh_production_token_enhanced(%(t)s, -1)", "far"),
    (API, "SELECT * FROM auth.refresh_production_token_enhanced(%(t)s)", "unknown"),
    (API, "SELECT * FROM auth.get_token_refresh_status(%(t)s)", "far"),
    (API, "SELECT * FROM auth.get_token_refresh_status(%(t)s)", "near"),
    (API, "SELECT * FROM auth.get_token_refresh_status(%(t)s)", "rotated"),
    (API, "SELECT * FROM auth.get_token_refresh_status(%(t)s)", "revoked"),
    (API, "SELECT * FROM auth.get_token_refresh_status(%(t)s)", "malformed"),
    (REFRESHER, "SELECT * FROM auth.get_token_refresh_status(%(t)s)", "near"),
    (REFRESHER, "SELECT * FROM auth.refresh_production_token_enhanced(%(t)s, NULL, false,"
                " 'SERVICE')", "near"),
    (REFRESHER, "SELECT auth.record_refresher_heartbeat('priv-refresher', ARRAY[%(t)s]) AS n",
     "far"),
    (REFRESHER, "SELECT auth.record_refresher_heartbeat('priv-refresher', ARRAY[%(t)s]) AS n",
     "malformed"),
    (ADMIN, "SELECT * FROM auth.test_token_refresh_system(%(t)s)", "near"),
    (ADMIN, "SELECT * FROM auth.test_token_refresh_system(%(t)s, true)", "far"),
    (ADMIN, "SELECT * FROM auth.test_token_refresh_system(%(t)s)", "unknown"),
    (ADMIN, "SELECT auth.revoke_api_token(%(t)s) AS revoked", "near"),
    (ADMIN, "SELECT auth.revoke_api_token(%(t)s) AS revoked", "unknown"),
    (ADMIN, "SELECT * FROM auth.refresh_expiring_tokens_batch(p_threshold_days => 10,"
            " p_max_tokens => 100)", "far"),
    (ADMIN, "SELECT * FROM auth.refresh_expiring_tokens_batch(p_dry_run => true)", "far"),
    (ADMIN, "SELECT * FROM auth.generate_production_api_token(%(u)s, %(n)s)", "far"),
    (ADMIN, "SELECT auth.set_refresh_policy('API', p_grace_period => '5 minutes') AS p", "far"),
    (MONITOR, "SELECT * FROM auth.refresh_alerts", "far"),
    (MONITOR, "SELECT * FROM auth.token_expiry_forecast", "far"),
    (MONITOR, "SELECT * FROM auth.token_usage_patterns", "far"),
    (MONITOR, "SELECT * FROM auth.tenant_usage_patterns", "far"),
    (MONITOR, "SELECT * FROM auth.refresh_metrics_hourly", "far"),
]


def test_every_public_function_answers_the_same_under_a_search_path_hijack(
        admin_conn, data, evil):
    tokens = {**data, "unknown": "ovt_prod_" + "0" * 64, "malformed": "not-a-token",
              "upper": data["far"].upper().replace("OVT_PROD_", "ovt_prod_"), "null": None}
    for role, sql, which in HIJACK_CASES:
        params = {"t": tokens[which], "u": data["user_hk"], "n": data["tenant_hk"]}
        plain, hijacked = answers_with_and_without_hijack(admin_conn, role, sql, params)
        assert plain or role == MONITOR, f"{role}: {sql} ({which}) answered nothing"
        assert hijacked == plain, f"{role}: {sql} ({which}) answered differently when hijacked"
