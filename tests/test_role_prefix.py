"""Two databases in one cluster with their own group roles (migrate --role-prefix).

Roles are cluster-wide: with the default prefix every database shares pyvault_admin.
A database migrated with a prefix grants everything to <prefix>_* instead, and the
pyvault_* roles hold nothing there: an admin of one database is not an admin of the
other. The prefix is stored, kept by later migrations, and cannot be swapped.
"""

from __future__ import annotations

import psycopg
import pytest

from pyvault_tokens.migrate import MigrateRefused, migrate

PREFIX = "billing"
ISSUE = ("SELECT token FROM auth.generate_production_api_token("
         "auth.register_user(auth.register_tenant('t'), 'u'), auth.register_tenant('t'))")


@pytest.fixture(scope="module")
def prefixed(cluster):
    url = cluster.create_database("role_prefix_billing")
    result = migrate(url, role_prefix=PREFIX)
    assert "0012.install-settings" in result.applied
    with cluster.admin() as admin:
        for login, role in (("prefix_default_admin", "pyvault_admin"),
                            ("prefix_billing_admin", f"{PREFIX}_admin"),
                            ("prefix_billing_api", f"{PREFIX}_api")):
            admin.execute(f"DROP ROLE IF EXISTS {login}")
            admin.execute(f"CREATE ROLE {login} LOGIN IN ROLE {role}")
    return url


def _as(url: str, login: str) -> psycopg.Connection:
    return psycopg.connect(url.replace("postgres@", f"{login}@", 1), autocommit=True)


def test_the_default_admin_is_not_an_admin_of_the_prefixed_database(prefixed, db_url):
    with _as(db_url, "prefix_default_admin") as c:
        assert c.execute(ISSUE).fetchone()[0].startswith("ovt_prod_")
    with _as(prefixed, "prefix_default_admin") as c, \
            pytest.raises(psycopg.errors.InsufficientPrivilege):
        c.execute(ISSUE)
    with _as(prefixed, "prefix_billing_admin") as c:
        token = c.execute(ISSUE).fetchone()[0]
    with _as(db_url, "prefix_billing_admin") as c, \
            pytest.raises(psycopg.errors.InsufficientPrivilege):
        c.execute(ISSUE)
    with _as(prefixed, "prefix_billing_api") as c:
        assert c.execute("SELECT is_valid FROM auth.validate_and_refresh_api_token(%s)",
                         (token,)).fetchone()[0] is True


def test_no_pyvault_role_holds_anything_in_the_prefixed_database(prefixed):
    with psycopg.connect(prefixed, autocommit=True) as c:
        held = c.execute(
            "SELECT count(*) FROM (SELECT proacl AS acl FROM pg_proc"
            " WHERE pronamespace = 'auth'::regnamespace UNION ALL SELECT relacl FROM pg_class"
            " WHERE relnamespace = 'auth'::regnamespace UNION ALL SELECT nspacl FROM"
            " pg_namespace WHERE nspname = 'auth') AS o, aclexplode(o.acl) AS a"
            " WHERE a.grantee::regrole::text LIKE 'pyvault\\_%%'").fetchone()[0]
        assert held == 0
        steps = dict(c.execute("SELECT step, result FROM auth.test_token_refresh_system("
                               "(SELECT token FROM auth.generate_production_api_token("
                               "auth.register_user(auth.register_tenant('d'), 'd'),"
                               " auth.register_tenant('d'))))").fetchall())
        assert steps["SECURITY"] == "OK"


def test_the_prefix_is_kept_and_cannot_be_swapped(prefixed):
    again = migrate(prefixed)
    assert again.applied == []
    with psycopg.connect(prefixed, autocommit=True) as c:
        assert c.execute("SELECT role_prefix FROM auth.install_settings").fetchone()[0] == PREFIX
    with pytest.raises(MigrateRefused, match="installed with role prefix 'billing'"):
        migrate(prefixed, role_prefix="acme")


@pytest.mark.parametrize("bad", ["", "Billing", "1x", "a-b", "x; DROP ROLE postgres", "a" * 41])
def test_a_malformed_prefix_is_refused_before_anything_is_written(cluster, bad):
    url = cluster.create_database("role_prefix_bad")
    with pytest.raises(MigrateRefused, match="role prefix"):
        migrate(url, role_prefix=bad)
    with psycopg.connect(url, autocommit=True) as c:
        assert c.execute("SELECT to_regnamespace('auth') IS NULL").fetchone()[0] is True


def test_the_force_limit_knows_the_prefixed_admin(prefixed):
    force = ("SELECT refresh_reason FROM auth.refresh_production_token_enhanced(%s,"
             " p_force => true)")
    with _as(prefixed, "prefix_billing_admin") as admin, _as(prefixed, "prefix_billing_api") as api:
        token = admin.execute(ISSUE).fetchone()[0]
        assert api.execute(force, (token,)).fetchone()[0] == "FORCE_RATE_LIMITED"
        assert admin.execute(force, (token,)).fetchone()[0] == "FORCED"
