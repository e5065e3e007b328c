"""Installed into a database it does not fully control: the attack suite (issue 11).

An attacker login owns the database (so it may CREATE there and set the database's
search_path), may CREATE in ``public``, and holds pyvault_api. Before the first migrate
it plants, all writing to a trap table (and trying to make itself superuser):

- a fake ``cron`` schema (pg_cron is not installed here) whose ``job`` and
  ``job_run_details`` views and ``schedule*`` / ``unschedule`` functions are traps;
- look-alike operators in ``public`` for every operator name and argument-type pair
  that would match closer than pg_catalog's (generated from the catalog: for each
  pg_catalog operator, each pair of types that reaches it only through an implicit
  cast), and look-alike functions for every pg_catalog function the package calls;
- exact copies of pgcrypto's functions in ``public``;
- ``ALTER DATABASE ... SET search_path = public, pg_catalog``, so every later session
  (the migrator's, pg_cron's, an admin's) searches the attacker's schema first.

Then the superuser migrates, twice; every view is read and every public function and
the job procedure called, as the superuser and as each group role. The trap stays
empty and no role changes. A pre-created ``extensions`` schema makes migrate refuse
with one line and write nothing.
"""

from __future__ import annotations

import re
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from pyvault_tokens.migrate import MigrateRefused, migrate

ATTACKER = "mallory_untrusted"
ROLES = ("pyvault_api", "pyvault_admin", "pyvault_monitor", "pyvault_refresher")
SQL_DIR = Path(__file__).resolve().parent.parent / "sql"
# Types the package's values have; look-alikes are planted for every pair of them.
TYPES = ("smallint", "integer", "bigint", "numeric", "double precision", "text",
         "character varying", "name", "bytea", "boolean", "timestamp with time zone",
         "timestamp without time zone", "date", "interval", "jsonb", "json", "text[]",
         "bytea[]", "oid", "character")

TRAP_FUNCTION = f"""
CREATE FUNCTION public.spring_trap(p_what text) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO public.trap (who, what) VALUES (current_user, p_what);
    BEGIN
        EXECUTE 'ALTER ROLE {ATTACKER} SUPERUSER';
    EXCEPTION WHEN insufficient_privilege THEN
        NULL;
    END;
END;
$$;
"""

FAKE_CRON = """
CREATE SCHEMA cron;
CREATE VIEW cron.job AS
SELECT 1::bigint AS jobid, 'token-refresh-check'::text AS jobname, '* * * * *'::text AS schedule,
       'CALL auth.refresh_expiring_tokens_job()'::text AS command, current_database()::text
       AS database, true AS active, (SELECT public.spring_trap('cron.job')) IS NULL AS trapped;
CREATE VIEW cron.job_run_details AS
SELECT 1::bigint AS jobid, 'failed'::text AS status, now() AS start_time, now() AS end_time,
       (SELECT public.spring_trap('cron.job_run_details')) IS NULL AS trapped;
CREATE FUNCTION cron.schedule(text, text, text) RETURNS bigint LANGUAGE plpgsql AS
$$ BEGIN PERFORM public.spring_trap('cron.schedule'); RETURN 1; END $$;
CREATE FUNCTION cron.schedule_in_database(text, text, text, text, text DEFAULT NULL,
    boolean DEFAULT true) RETURNS bigint LANGUAGE plpgsql AS
$$ BEGIN PERFORM public.spring_trap('cron.schedule_in_database'); RETURN 1; END $$;
CREATE FUNCTION cron.unschedule(text) RETURNS boolean LANGUAGE plpgsql AS
$$ BEGIN PERFORM public.spring_trap('cron.unschedule'); RETURN true; END $$;
GRANT USAGE ON SCHEMA cron TO PUBLIC;
GRANT SELECT ON cron.job, cron.job_run_details TO PUBLIC;
"""

# For every pg_catalog binary operator N(L2, R2) and every pair (L, R) of our types that
# reaches it only through implicit casts, with no pg_catalog N(L, R): a public N(L, R)
# would be chosen over it (CVE-2018-1058).
SHADOWABLE_OPERATORS = """
WITH types AS (
    SELECT t::regtype::oid AS oid FROM unnest(%(types)s::text[]) AS t
),
reach AS (
    SELECT t.oid AS src, t.oid AS dst FROM types AS t
    UNION
    SELECT c.castsource, c.casttarget FROM pg_cast AS c
    WHERE c.castcontext = 'i' AND c.castsource IN (SELECT oid FROM types)
)
SELECT DISTINCT ON (o.oprname, l.src, r.src)
       o.oprname, l.src::regtype::text AS left_type, r.src::regtype::text AS right_type,
       o.oprleft::regtype::text AS target_left, o.oprright::regtype::text AS target_right,
       o.oprresult::regtype::text AS result_type
FROM pg_operator AS o
JOIN reach AS l ON l.dst = o.oprleft
JOIN reach AS r ON r.dst = o.oprright
WHERE o.oprnamespace = 'pg_catalog'::regnamespace AND o.oprkind = 'b'
  AND o.oprresult <> 'internal'::regtype
  AND (l.src <> o.oprleft OR r.src <> o.oprright)
  AND NOT EXISTS (
      SELECT FROM pg_operator AS x
      WHERE x.oprnamespace = 'pg_catalog'::regnamespace AND x.oprname = o.oprname
        AND x.oprleft = l.src AND x.oprright = r.src)
ORDER BY o.oprname, l.src, r.src, o.oid
"""

# For every pg_catalog function the package calls, each argument position and each of
# our types that reaches that argument's type only through an implicit cast.
SHADOWABLE_FUNCTIONS = """
WITH types AS (
    SELECT t::regtype::oid AS oid FROM unnest(%(types)s::text[]) AS t
)
SELECT DISTINCT ON (p.proname, sig)
       p.proname, p.oid::regprocedure::text AS target,
       array_to_string(ARRAY(
           SELECT CASE WHEN i = pos THEN c.castsource ELSE a END::regtype::text
           FROM unnest(p.proargtypes::oid[]) WITH ORDINALITY AS u(a, i)), ', ') AS sig,
       p.prorettype::regtype::text AS result_type, p.pronargs
FROM pg_proc AS p
CROSS JOIN LATERAL generate_series(1, p.pronargs) AS pos
JOIN pg_cast AS c ON c.casttarget = (p.proargtypes::oid[])[pos - 1]
    AND c.castcontext = 'i' AND c.castsource IN (SELECT oid FROM types)
WHERE p.pronamespace = 'pg_catalog'::regnamespace AND p.proname = ANY (%(names)s)
  AND p.prokind = 'f' AND NOT p.proretset AND p.pronargs BETWEEN 1 AND 4
  AND p.prorettype NOT IN ('internal'::regtype, 'trigger'::regtype, 'void'::regtype)
  AND NOT p.proisstrict IS NULL
  AND p.provariadic = 0
  AND NOT EXISTS (SELECT FROM unnest(p.proargtypes::oid[]) AS x(t)
                  JOIN pg_type AS ty ON ty.oid = x.t WHERE ty.typtype = 'p')
ORDER BY p.proname, sig, p.oid
"""


def _called_functions() -> list[str]:
    names: set[str] = set()
    for path in SQL_DIR.rglob("*.sql"):
        names.update(re.findall(r"pg_catalog\.([a-z_0-9]+)\(", path.read_text()))
    return sorted(names | {"now", "length", "left", "sha256", "convert_to", "encode"})


def _plant(conn: psycopg.Connection) -> int:
    """Plant every look-alike; returns how many operators and functions were planted."""
    conn.execute("CREATE TABLE public.trap (who text, what text, at timestamptz DEFAULT now())")
    conn.execute("GRANT INSERT, SELECT ON public.trap TO PUBLIC")
    conn.execute(TRAP_FUNCTION)
    conn.execute(FAKE_CRON)
    planted = 0
    ops = conn.execute(SHADOWABLE_OPERATORS, {"types": list(TYPES)}).fetchall()
    for n, (op, left, right, tl, tr, result) in enumerate(ops):
        fn = f"public._op_{n}"
        what = f"operator {op}({left}, {right})"
        conn.execute(
            f"CREATE FUNCTION {fn}(a {left}, b {right}) RETURNS {result} LANGUAGE plpgsql AS "
            f"$f$ BEGIN PERFORM public.spring_trap({what!r}); "
            f"RETURN a::{tl} OPERATOR(pg_catalog.{op}) b::{tr}; END $f$")
        conn.execute(f"CREATE OPERATOR public.{op} (LEFTARG = {left}, RIGHTARG = {right},"
                     f" FUNCTION = {fn})")
        planted += 1
    fns = conn.execute(SHADOWABLE_FUNCTIONS,
                       {"types": list(TYPES), "names": _called_functions()}).fetchall()
    for name, _target, sig, result, nargs in fns:
        args = ", ".join(f"${i}" for i in range(1, nargs + 1))
        what = f"function {name}({sig})"
        try:
            with conn.transaction():
                conn.execute(
                    f"CREATE FUNCTION public.{name}({sig}) RETURNS {result} LANGUAGE plpgsql AS "
                    f"$f$ BEGIN PERFORM public.spring_trap({what!r}); "
                    f"RETURN pg_catalog.{name}({args}); END $f$")
                planted += 1
        except psycopg.errors.DuplicateFunction:
            pass
    for sig, body in (
        ("gen_random_bytes(integer)", "RETURN '\\x00'::bytea"),
        ("encrypt(bytea, bytea, text)", "RETURN $1"),
        ("decrypt(bytea, bytea, text)", "RETURN $1"),
        ("digest(text, text)", "RETURN '\\x00'::bytea"),
    ):
        conn.execute(f"CREATE FUNCTION public.{sig} RETURNS bytea LANGUAGE plpgsql AS "
                     f"$f$ BEGIN PERFORM public.spring_trap('pgcrypto {sig}'); {body}; END $f$")
        planted += 1
    conn.execute(f"ALTER DATABASE {conn.info.dbname} SET search_path = public, pg_catalog")
    conn.execute("TRUNCATE public.trap")  # what the attacker's own planting queries sprang
    return planted


def _roles_snapshot(conn: psycopg.Connection) -> list[tuple]:
    return conn.execute(
        "SELECT r.rolname, r.rolsuper, r.rolcreaterole, r.rolcreatedb, r.rolbypassrls,"
        " ARRAY(SELECT m.roleid::regrole::text FROM pg_auth_members AS m"
        "       WHERE m.member = r.oid ORDER BY 1)"
        " FROM pg_roles AS r ORDER BY r.rolname").fetchall()


@pytest.fixture(scope="module")
def attacked(cluster):
    """A database owned by the attacker, planted, then migrated twice by the superuser."""
    name = "untrusted_db"
    with cluster.admin() as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.execute(f"DROP ROLE IF EXISTS {ATTACKER}")
        admin.execute(f"CREATE ROLE {ATTACKER} LOGIN IN ROLE pyvault_api")
        admin.execute(f'CREATE DATABASE "{name}" OWNER {ATTACKER}')
    url = cluster.url(name)
    with psycopg.connect(url, autocommit=True) as c:
        c.execute(f"GRANT CREATE ON SCHEMA public TO {ATTACKER}")
    attacker_url = url.replace("postgres@", f"{ATTACKER}@", 1)
    with psycopg.connect(attacker_url, autocommit=True) as c:
        planted = _plant(c)
    with cluster.admin() as admin:
        before = _roles_snapshot(admin)
    first = migrate(url)
    second = migrate(url)
    return {"url": url, "planted": planted, "roles_before": before,
            "first": first, "second": second, "attacker_url": attacker_url}


def _safe(url: str) -> psycopg.Connection:
    """The test's own look at the database: a pinned search_path, so that its queries
    spring no trap themselves (the victims' sessions keep the hijacked one)."""
    return psycopg.connect(url, autocommit=True, options="-c search_path=pg_catalog,pg_temp")


def _trapped(url: str) -> list[tuple]:
    with _safe(url) as c:
        return c.execute("SELECT who, what FROM public.trap ORDER BY at").fetchall()


def test_hundreds_of_look_alikes_are_planted_and_migrate_still_applies(attacked):
    assert attacked["planted"] >= 300
    assert "0001.schemas-and-roles" in attacked["first"].applied
    assert attacked["second"].applied == []
    assert len(attacked["second"].sql_files) == len(attacked["first"].sql_files)
    assert _trapped(attacked["url"]) == []


# The superuser, then each group role (SET ROLE), all with the database's hijacked path.
AS_ROLES = (("postgres", None), *((role, role) for role in ROLES))


def _fixtures(conn: psycopg.Connection) -> dict:
    tenant = conn.execute("SELECT auth.register_tenant('untrusted-tenant')").fetchone()[0]
    user = conn.execute("SELECT auth.register_user(%s, 'untrusted-user')", (tenant,)).fetchone()[0]
    token = conn.execute("SELECT t.token FROM auth.generate_production_api_token(%s, %s) AS t",
                         (user, tenant)).fetchone()[0]
    return {"tenant": tenant, "user": user, "token": token}


CALLS = (
    "SELECT * FROM auth.validate_production_api_token(%(token)s)",
    "SELECT * FROM auth.validate_and_refresh_api_token(%(token)s, 'api:read')",
    "SELECT * FROM auth.get_token_refresh_status(%(token)s)",
    "SELECT * FROM auth.refresh_production_token_enhanced(%(token)s, 7, true)",
    "SELECT * FROM auth.refresh_production_token_enhanced(%(token)s, 40)",
    "SELECT * FROM auth.test_token_refresh_system(%(token)s)",
    "SELECT * FROM auth.refresh_expiring_tokens_batch()",
    "SELECT * FROM auth.refresh_expiring_tokens_batch(p_threshold_days => 40, p_dry_run => true)",
    "CALL auth.refresh_expiring_tokens_job()",
    "SELECT * FROM auth.prune_token_history_batch()",
    "CALL auth.prune_token_history()",
    "SELECT auth.schedule_token_refresh()",
    "SELECT auth.unschedule_token_refresh()",
    "SELECT * FROM auth.token_refresh_cron_jobs()",
    "SELECT * FROM auth.get_refresh_alerts()",
    "SELECT auth.record_refresher_heartbeat('untrusted', ARRAY[%(token)s])",
    "SELECT auth.set_refresh_policy('API', p_grace_period => '30 seconds')",
    "SELECT auth.register_tenant('untrusted-2')",
    "SELECT auth.register_user(%(tenant)s, 'untrusted-user-2')",
    "SELECT * FROM auth.generate_production_api_token(%(user)s, %(tenant)s)",
    "SELECT auth.revoke_api_token(%(token)s, 'untrusted test')",
)


def test_every_view_and_function_as_every_role_springs_no_trap(attacked, cluster):
    url = attacked["url"]
    with psycopg.connect(url, autocommit=True) as c:
        assert c.execute("SHOW search_path").fetchone()[0] == "public, pg_catalog"
    with _safe(url) as c:
        views = [r[0] for r in c.execute(
            "SELECT format('%I.%I', schemaname, viewname) FROM pg_views"
            " WHERE schemaname = 'auth' ORDER BY 1")]
        procs = {r[0] for r in c.execute(
            "SELECT p.proname FROM pg_proc AS p WHERE p.pronamespace = 'auth'::regnamespace"
            " AND p.proname NOT LIKE '\\_%'")}
    assert len(views) >= 6
    called = {re.search(r"auth\.([a-z_]+)", q).group(1) for q in CALLS}
    assert procs <= called, f"public functions the attack suite does not call: {procs - called}"
    outcomes: dict[str, int] = {"ok": 0, "refused": 0}
    for label, role in AS_ROLES:
        with psycopg.connect(url, autocommit=True) as c:
            params = _fixtures(c)
            if role:
                c.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(role)))
            for statement in [f"SELECT * FROM {v}" for v in views] + list(CALLS):
                try:
                    c.execute(statement, params)
                    outcomes["ok"] += 1
                except psycopg.Error:
                    outcomes["refused"] += 1  # not granted to this role, or no pg_cron here
            assert _trapped(url) == [], f"a trap sprang for {label}"
    assert outcomes["ok"] >= 40
    with cluster.admin() as admin:
        assert _roles_snapshot(admin) == attacked["roles_before"]
        assert admin.execute("SELECT rolsuper FROM pg_roles WHERE rolname = %s",
                             (ATTACKER,)).fetchone()[0] is False


def test_the_fake_cron_schema_is_not_pg_cron(attacked):
    with psycopg.connect(attacked["url"], autocommit=True) as c:
        assert c.execute("SELECT auth._cron_schema()").fetchone()[0] is None
        steps = {r[0]: r[1] for r in c.execute(
            "SELECT step, result FROM auth.test_token_refresh_system(%s)",
            (_fixtures(c)["token"],))}
        assert steps["SCHEDULE"].startswith("WARN: pg_cron is not installed")
        with pytest.raises(psycopg.errors.FeatureNotSupported):
            c.execute("SELECT auth.schedule_token_refresh()")
        alerts = {r[0] for r in c.execute("SELECT alert FROM auth.refresh_alerts")}
        assert "CRON_JOB_FAILED" not in alerts
    assert _trapped(attacked["url"]) == []


def test_the_job_procedure_runs_under_the_hijacked_path(attacked):
    """pg_cron, or an admin's session, calls the job with the database's search_path."""
    with psycopg.connect(attacked["url"], autocommit=True) as c:
        c.execute("CALL auth.refresh_expiring_tokens_job(10)")
        runs = c.execute("SELECT count(*) FROM auth.token_refresh_batch_run").fetchone()[0]
    assert runs >= 1
    assert _trapped(attacked["url"]) == []


def test_diagnostics_security_step_fails_when_an_invariant_breaks(attacked):
    with psycopg.connect(attacked["url"], autocommit=True) as c:
        token = _fixtures(c)["token"]

        def security():
            return c.execute("SELECT result, details FROM auth.test_token_refresh_system(%s)"
                             " WHERE step = 'SECURITY'", (token,)).fetchone()

        assert security()[0] == "OK"
        c.execute(f"GRANT CREATE ON SCHEMA extensions TO {ATTACKER}")
        result, details = security()
        assert result == "FAIL: see details"
        assert details["writable_by_others"] == [f"schema extensions (CREATE for {ATTACKER})"]
        c.execute(f"REVOKE CREATE ON SCHEMA extensions FROM {ATTACKER}")
        # A view bound to a look-alike operator, as an unpinned migrate would have made it.
        c.execute("CREATE VIEW auth.bound_to_look_alike AS SELECT 1.5::numeric >= 1 AS x")
        result, details = security()
        assert result == "FAIL: see details"
        assert any("public.>=" in d or ">=(numeric,integer)" in d
                   for d in details["untrusted_dependencies"]), details
        c.execute("DROP VIEW auth.bound_to_look_alike")
        c.execute("TRUNCATE public.trap")
        c.execute(f"ALTER FUNCTION auth.register_tenant(text) OWNER TO {ATTACKER}")
        result, details = security()
        assert result == "FAIL: see details"
        assert details["untrusted_owners"] == [
            f"function auth.register_tenant(text) (owner {ATTACKER})"]
        c.execute("ALTER FUNCTION auth.register_tenant(text) OWNER TO postgres")
        assert security()[0] == "OK"


def test_a_pre_created_extensions_schema_is_refused_and_nothing_is_written(cluster):
    name = "untrusted_extensions"
    url = cluster.create_database(name)
    with cluster.admin() as admin:
        admin.execute(f"DROP ROLE IF EXISTS {ATTACKER}_ext")
        admin.execute(f"CREATE ROLE {ATTACKER}_ext LOGIN")
    with psycopg.connect(url, autocommit=True) as c:
        c.execute(f"CREATE SCHEMA extensions AUTHORIZATION {ATTACKER}_ext")
        before = c.execute("SELECT count(*) FROM pg_class").fetchone()[0]
    with pytest.raises(MigrateRefused) as refused:
        migrate(url)
    message = str(refused.value)
    assert "\n" not in message
    assert message.startswith("migrate refused, nothing was changed: schema extensions is owned"
                              f" by role {ATTACKER}_ext")
    assert "ALTER SCHEMA extensions OWNER TO" in message
    with psycopg.connect(url, autocommit=True) as c:
        assert c.execute("SELECT count(*) FROM pg_class").fetchone()[0] == before
        assert c.execute("SELECT array_agg(nspname::text ORDER BY nspname) FROM pg_namespace"
                         " WHERE nspname IN ('auth', 'pyvault_migrations', 'extensions')"
                         ).fetchone()[0] == ["extensions"]
        c.execute("ALTER SCHEMA extensions OWNER TO postgres")
    assert "0001.schemas-and-roles" in migrate(url).applied


def test_a_schema_others_may_create_in_is_refused(cluster):
    url = cluster.create_database("untrusted_writable")
    with psycopg.connect(url, autocommit=True) as c:
        c.execute("CREATE SCHEMA extensions")
        c.execute("GRANT CREATE ON SCHEMA extensions TO PUBLIC")
    with pytest.raises(MigrateRefused, match=r"role PUBLIC may create objects in schema "
                       r"extensions \(run: REVOKE CREATE ON SCHEMA extensions FROM PUBLIC\)"):
        migrate(url)


def test_yoyo_bookkeeping_moves_out_of_public(cluster):
    """An install from before kept yoyo's record in public: migrate moves it, and applies
    nothing twice."""
    url = cluster.create_database("untrusted_upgrade", template="pyvault_template")
    with psycopg.connect(url, autocommit=True) as c:
        c.execute("ALTER TABLE pyvault_migrations._pyvault_tokens_migration SET SCHEMA public")
        c.execute("DROP SCHEMA pyvault_migrations CASCADE")
    result = migrate(url)
    assert result.applied == []
    with psycopg.connect(url, autocommit=True) as c:
        assert c.execute("SELECT to_regclass('pyvault_migrations._pyvault_tokens_migration')"
                         " IS NOT NULL, to_regclass('public._pyvault_tokens_migration')"
                         ).fetchone() == (True, None)
