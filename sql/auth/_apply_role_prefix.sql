-- Move every grant of the package's objects from the default group roles (pyvault_*,
-- which the files in sql/ name) to the install's own (auth.install_settings), so that
-- with a role prefix the pyvault_* roles hold nothing in this database. A no-op for the
-- default prefix. migrate calls it after re-applying sql/, in the same transaction.
CREATE OR REPLACE FUNCTION auth._apply_role_prefix() RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
-- @plpgsql_check_options: performance_warnings = false, security_warnings = false
-- (it grants through dynamic SQL, which the checker cannot see; the %s it formats are
-- catalog output, not input: privilege keywords, FUNCTION/PROCEDURE/TABLE/SCHEMA, and
-- regprocedure/regclass text, which the catalog quotes itself)
DECLARE
    v_kind text;
    v_from text;
    v_to text;
    v_grant record;
    v_moved integer := 0;
BEGIN
    FOREACH v_kind IN ARRAY ARRAY['api', 'admin', 'monitor', 'refresher'] LOOP
        v_from := 'pyvault_' || v_kind;
        v_to := auth._role(v_kind);
        CONTINUE WHEN v_to = v_from;
        FOR v_grant IN
            SELECT CASE p.prokind WHEN 'p' THEN 'PROCEDURE' ELSE 'FUNCTION' END AS kind,
                   p.oid::pg_catalog.regprocedure::text AS object, a.privilege_type
            FROM pg_catalog.pg_proc AS p
            CROSS JOIN LATERAL pg_catalog.aclexplode(p.proacl) AS a
            WHERE p.pronamespace = 'auth'::pg_catalog.regnamespace
              AND a.grantee = v_from::pg_catalog.regrole
            UNION ALL
            SELECT 'TABLE', c.oid::pg_catalog.regclass::text, a.privilege_type
            FROM pg_catalog.pg_class AS c
            CROSS JOIN LATERAL pg_catalog.aclexplode(c.relacl) AS a
            WHERE c.relnamespace = 'auth'::pg_catalog.regnamespace
              AND a.grantee = v_from::pg_catalog.regrole
            UNION ALL
            SELECT 'SCHEMA', 'auth', a.privilege_type
            FROM pg_catalog.pg_namespace AS n
            CROSS JOIN LATERAL pg_catalog.aclexplode(n.nspacl) AS a
            WHERE n.nspname = 'auth' AND a.grantee = v_from::pg_catalog.regrole
        LOOP
            EXECUTE pg_catalog.format('GRANT %s ON %s %s TO %I',
                                      v_grant.privilege_type, v_grant.kind, v_grant.object, v_to);
            EXECUTE pg_catalog.format('REVOKE %s ON %s %s FROM %I',
                                      v_grant.privilege_type, v_grant.kind, v_grant.object, v_from);
            v_moved := v_moved + 1;
        END LOOP;
    END LOOP;
    RETURN v_moved;
END;
$$;
REVOKE ALL ON FUNCTION auth._apply_role_prefix() FROM public;
