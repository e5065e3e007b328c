"""Abuse limits (issue 11), tested with real logins: session_user decides who is an admin.

- A login holding only pyvault_api may force a token's refresh at most once per the
  policy's force_min_interval; a refused force is FORCE_RATE_LIMITED, not an exception,
  and writes nothing. A retry with the predecessor still gets ALREADY_REFRESHED. Admins
  are not limited.
- register_tenant / register_user reject blank names and control characters.
- Under reuse_action = REJECT the kept successor is erased once the dead predecessor is
  presented, not left for the next batch run.
"""

from __future__ import annotations

import psycopg
import pytest

from tests.tokens import make_token

API_LOGIN, ADMIN_LOGIN = "abuse_api_login", "abuse_admin_login"
FORCE = ("SELECT success, new_token, refresh_reason FROM"
         " auth.refresh_production_token_enhanced(%s, p_force => true)")
# Every table a refresh can write to, counted to prove a refused force wrote nothing.
WRITTEN = ("SELECT (SELECT count(*) FROM auth.api_token_h),"
           " (SELECT count(*) FROM auth.api_token_s),"
           " (SELECT count(*) FROM auth.api_token_bridge), (SELECT count(*) FROM"
           " auth.token_refresh_event), (SELECT count(*) FROM auth.token_rotation_l)")


@pytest.fixture(scope="module")
def logins(db_url):
    with psycopg.connect(db_url, autocommit=True) as c:
        for login, role in ((API_LOGIN, "pyvault_api"), (ADMIN_LOGIN, "pyvault_admin")):
            c.execute(f"DROP ROLE IF EXISTS {login}")
            c.execute(f"CREATE ROLE {login} LOGIN IN ROLE {role}")
    return {name: db_url.replace("postgres@", f"{name}@", 1) for name in (API_LOGIN, ADMIN_LOGIN)}


def _age(conn: psycopg.Connection, token: str, by: str = "2 minutes") -> None:
    """Make a token look issued (or last refreshed) some time ago."""
    conn.execute("UPDATE auth.api_token_s SET load_date = load_date - %s::interval"
                 " WHERE api_token_hk = (tests.bridge(%s)).api_token_hk"
                 " AND load_end_date IS NULL", (by, token))


def test_the_api_role_forces_at_most_once_a_minute_per_family(conn, logins):
    token = make_token(conn)
    _age(conn, token)
    with psycopg.connect(logins[API_LOGIN], autocommit=True) as api:
        ok, successor, reason = api.execute(FORCE, (token,)).fetchone()
        assert (ok, reason) == (True, "FORCED")
        before = conn.execute(WRITTEN).fetchone()
        refused = [api.execute(FORCE, (successor,)).fetchone() for _ in range(200)]
        assert {r[2] for r in refused} == {"FORCE_RATE_LIMITED"}
        assert {(r[0], r[1]) for r in refused} == {(False, None)}
        assert conn.execute(WRITTEN).fetchone() == before
        # The predecessor's holder retrying is not a new force: it gets the same successor.
        assert api.execute(FORCE, (token,)).fetchone() == (True, successor, "ALREADY_REFRESHED")
        _age(conn, successor)
        assert api.execute(FORCE, (successor,)).fetchone()[2] == "FORCED"


def test_admins_are_not_limited_and_the_interval_is_configurable(conn, logins):
    token = make_token(conn, user="admin-forcer")
    with psycopg.connect(logins[ADMIN_LOGIN], autocommit=True) as admin:
        for _ in range(3):
            ok, token, reason = admin.execute(FORCE, (token,)).fetchone()
            assert (ok, reason) == (True, "FORCED")
        admin.execute("SELECT auth.set_refresh_policy('PRODUCTION',"
                      " p_force_min_interval => '0 seconds')")
    try:
        with psycopg.connect(logins[API_LOGIN], autocommit=True) as api:
            assert api.execute(FORCE, (token,)).fetchone()[2] == "FORCED"
    finally:
        conn.execute("SELECT auth.set_refresh_policy('PRODUCTION',"
                     " p_force_min_interval => '1 minute')")


@pytest.mark.parametrize("name", [None, "", "   ", "a\nb", "tab\there", "nul\x01x", "esc\x1b[31m",
                                  "x" * 201])
def test_registration_rejects_blank_names_and_control_characters(conn, name):
    tenants = conn.execute("SELECT count(*) FROM auth.tenant_h").fetchone()[0]
    with pytest.raises(psycopg.errors.InvalidParameterValue, match="without control characters"):
        conn.execute("SELECT auth.register_tenant(%s)", (name,))
    tenant = conn.execute("SELECT auth.register_tenant('abuse-tenant')").fetchone()[0]
    with pytest.raises(psycopg.errors.InvalidParameterValue, match="without control characters"):
        conn.execute("SELECT auth.register_user(%s, %s)", (tenant, name))
    assert conn.execute("SELECT count(*) FROM auth.tenant_h").fetchone()[0] in (tenants,
                                                                               tenants + 1)
    assert conn.execute("SELECT count(*) FROM auth.user_h WHERE tenant_hk = %s",
                        (tenant,)).fetchone()[0] == 0


def test_reject_erases_the_kept_successor_when_the_dead_predecessor_is_presented(conn):
    conn.execute("SELECT auth.set_refresh_policy('API', p_reuse_action => 'REJECT',"
                 " p_grace_period => '0 seconds')")
    try:
        token = make_token(conn, token_type="API", user="reject-user")
        successor = conn.execute(FORCE, (token,)).fetchone()[1]
        # The successor's first use starts the predecessor's (zero) grace window.
        assert conn.execute("SELECT is_valid FROM auth.validate_and_refresh_api_token(%s)",
                            (successor,)).fetchone()[0] is True
        kept = ("SELECT successor_secret IS NOT NULL FROM auth.api_token_bridge"
                " WHERE api_token_hk = (tests.bridge(%s)).api_token_hk")
        assert conn.execute(kept, (token,)).fetchone()[0] is True
        row = conn.execute("SELECT is_valid, refresh_reason FROM"
                           " auth.validate_and_refresh_api_token(%s)", (token,)).fetchone()
        assert row[0] is False
        assert conn.execute(kept, (token,)).fetchone()[0] is False
        # REJECT leaves the family alive: the successor still works.
        assert conn.execute("SELECT is_valid FROM auth.validate_production_api_token(%s)",
                            (successor,)).fetchone()[0] is True
    finally:
        conn.execute("SELECT auth.set_refresh_policy('API', p_reuse_action => 'REVOKE_FAMILY',"
                     " p_grace_period => '60 seconds')")
