-- What breaks the package's security invariants on this live database, as arrays of
-- object names under one key per invariant; every array empty means all hold. The
-- diagnostics' SECURITY step reports it. Trusted owners are superusers and the role that
-- installed the package's functions (the owner of this one): DESIGN.md section 5.
CREATE OR REPLACE FUNCTION auth._security_findings() RETURNS jsonb
LANGUAGE plpgsql
STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_installer oid;
    v_pgcrypto record;
    v_cron name := auth._cron_schema();
    v_schemas oid[];
    v_result jsonb;
BEGIN
    SELECT p.proowner INTO STRICT v_installer
    FROM pg_catalog.pg_proc AS p
    WHERE p.oid = 'auth._security_findings()'::pg_catalog.regprocedure;
    SELECT e.extnamespace, e.extowner, n.nspname INTO v_pgcrypto
    FROM pg_catalog.pg_extension AS e
    INNER JOIN pg_catalog.pg_namespace AS n ON e.extnamespace = n.oid
    WHERE e.extname = 'pgcrypto';
    -- Every schema whose objects the package resolves by name.
    SELECT pg_catalog.array_agg(n.oid) INTO v_schemas
    FROM pg_catalog.pg_namespace AS n
    WHERE n.nspname IN ('auth', 'extensions', 'pyvault_migrations')
       OR n.nspname = v_cron OR n.oid = v_pgcrypto.extnamespace;

    WITH trusted AS (
        SELECT r.oid FROM pg_catalog.pg_roles AS r WHERE r.rolsuper OR r.oid = v_installer
    ),
    schemas AS (
        SELECT n.oid, n.nspname, n.nspowner, n.nspacl
        FROM pg_catalog.pg_namespace AS n WHERE n.oid = ANY (v_schemas)
    ),
    auth_functions AS (
        SELECT p.oid, p.prosecdef, p.proconfig, p.proowner
        FROM pg_catalog.pg_proc AS p
        WHERE p.pronamespace = 'auth'::pg_catalog.regnamespace
    )
    SELECT pg_catalog.jsonb_build_object(
        'unpinned_security_definer', (
            SELECT coalesce(pg_catalog.jsonb_agg(f.oid::pg_catalog.regprocedure::text ORDER BY 1), '[]')
            FROM auth_functions AS f
            WHERE f.prosecdef
              AND NOT coalesce(f.proconfig, '{}') @> '{"search_path=pg_catalog, pg_temp"}'),
        'public_executable', (
            SELECT coalesce(pg_catalog.jsonb_agg(f.oid::pg_catalog.regprocedure::text ORDER BY 1), '[]')
            FROM auth_functions AS f
            WHERE pg_catalog.has_function_privilege('public', f.oid, 'EXECUTE')),
        'api_readable_tables', (
            SELECT coalesce(pg_catalog.jsonb_agg(c.relname ORDER BY c.relname), '[]')
            FROM pg_catalog.pg_class AS c
            WHERE c.relnamespace = 'auth'::pg_catalog.regnamespace AND c.relkind = 'r'
              AND pg_catalog.has_table_privilege(auth._role('api'), c.oid, 'SELECT')),
        'untrusted_owners', (
            SELECT coalesce(pg_catalog.jsonb_agg(o.what ORDER BY o.what), '[]')
            FROM (
                SELECT pg_catalog.format('schema %I (owner %s)', s.nspname, s.nspowner::pg_catalog.regrole) AS what
                FROM schemas AS s WHERE s.nspowner NOT IN (SELECT t.oid FROM trusted AS t)
                UNION ALL
                SELECT pg_catalog.format('extension pgcrypto (owner %s)', v_pgcrypto.extowner::pg_catalog.regrole)
                WHERE v_pgcrypto.extowner NOT IN (SELECT t.oid FROM trusted AS t)
                UNION ALL
                SELECT pg_catalog.format('function %s (owner %s)', f.oid::pg_catalog.regprocedure,
                                         f.proowner::pg_catalog.regrole)
                FROM auth_functions AS f WHERE f.proowner NOT IN (SELECT t.oid FROM trusted AS t)
            ) AS o),
        'writable_by_others', (
            SELECT coalesce(pg_catalog.jsonb_agg(DISTINCT pg_catalog.format('schema %I (CREATE for %s)',
                s.nspname, CASE WHEN a.grantee = 0 THEN 'PUBLIC'
                                ELSE a.grantee::pg_catalog.regrole::text END)), '[]')
            FROM schemas AS s CROSS JOIN LATERAL pg_catalog.aclexplode(s.nspacl) AS a
            WHERE a.privilege_type = 'CREATE' AND a.grantee <> s.nspowner
              AND a.grantee NOT IN (SELECT t.oid FROM trusted AS t)),
        'pgcrypto_not_in_extensions', CASE
            WHEN v_pgcrypto.nspname IS DISTINCT FROM 'extensions'
                THEN pg_catalog.jsonb_build_array(coalesce(v_pgcrypto.nspname::text, '(not installed)'))
            ELSE '[]' END,
        -- Views, constraints, defaults and SQL-body functions bind the operators, functions
        -- and types they use when they are created: none may be bound outside the schemas
        -- above and pg_catalog (a look-alike in a writable schema, CVE-2018-1058).
        'untrusted_dependencies', (
            SELECT coalesce(pg_catalog.jsonb_agg(DISTINCT pg_catalog.pg_describe_object(
                d.refclassid, d.refobjid, 0)), '[]')
            FROM pg_catalog.pg_depend AS d
            LEFT JOIN pg_catalog.pg_proc AS p
                ON d.refclassid = 'pg_catalog.pg_proc'::pg_catalog.regclass AND p.oid = d.refobjid
            LEFT JOIN pg_catalog.pg_operator AS op
                ON d.refclassid = 'pg_catalog.pg_operator'::pg_catalog.regclass AND op.oid = d.refobjid
            LEFT JOIN pg_catalog.pg_type AS ty
                ON d.refclassid = 'pg_catalog.pg_type'::pg_catalog.regclass AND ty.oid = d.refobjid
            WHERE d.deptype = 'n'
              AND coalesce(p.pronamespace, op.oprnamespace, ty.typnamespace) IS NOT NULL
              AND coalesce(p.pronamespace, op.oprnamespace, ty.typnamespace)
                  <> 'pg_catalog'::pg_catalog.regnamespace
              AND coalesce(p.pronamespace, op.oprnamespace, ty.typnamespace) <> ALL (v_schemas)
              AND (d.classid, d.objid) IN (
                  SELECT 'pg_catalog.pg_rewrite'::pg_catalog.regclass, rw.oid
                  FROM pg_catalog.pg_rewrite AS rw
                  INNER JOIN pg_catalog.pg_class AS c ON rw.ev_class = c.oid
                  WHERE c.relnamespace = 'auth'::pg_catalog.regnamespace
                  UNION ALL
                  SELECT 'pg_catalog.pg_constraint'::pg_catalog.regclass, co.oid
                  FROM pg_catalog.pg_constraint AS co
                  WHERE co.connamespace = 'auth'::pg_catalog.regnamespace
                  UNION ALL
                  SELECT 'pg_catalog.pg_attrdef'::pg_catalog.regclass, ad.oid
                  FROM pg_catalog.pg_attrdef AS ad
                  INNER JOIN pg_catalog.pg_class AS c ON ad.adrelid = c.oid
                  WHERE c.relnamespace = 'auth'::pg_catalog.regnamespace
                  UNION ALL
                  SELECT 'pg_catalog.pg_proc'::pg_catalog.regclass, f.oid FROM auth_functions AS f
                  UNION ALL
                  SELECT 'pg_catalog.pg_class'::pg_catalog.regclass, c.oid
                  FROM pg_catalog.pg_class AS c
                  WHERE c.relnamespace = 'auth'::pg_catalog.regnamespace
              ))
    ) INTO v_result;
    RETURN v_result;
END;
$$;
REVOKE ALL ON FUNCTION auth._security_findings() FROM public;
