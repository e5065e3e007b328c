-- Schemas, extensions and the three NOLOGIN group roles.
-- Roles are cluster-wide, so a second database in the same cluster (or a concurrent
-- migration of one) may have created them already: that is not an error.
-- A schema named extensions that someone else owns is refused: its owner could rename
-- it and plant look-alikes of the pgcrypto functions every token is made with. (migrate
-- refuses it before this runs; the check stays here for anyone applying the file alone.)

DO $$
DECLARE
    v_owner oid;
BEGIN
    SELECT n.nspowner INTO v_owner
    FROM pg_catalog.pg_namespace AS n WHERE n.nspname OPERATOR(pg_catalog.=) 'extensions';
    IF v_owner IS NULL THEN
        CREATE SCHEMA extensions;
    ELSIF NOT EXISTS (
        SELECT FROM pg_catalog.pg_roles AS r
        WHERE r.oid OPERATOR(pg_catalog.=) v_owner
          AND (r.rolsuper OR r.rolname OPERATOR(pg_catalog.=) CURRENT_USER)
    ) THEN
        RAISE EXCEPTION 'schema extensions is owned by role %, not by the migrating role or a superuser',
            v_owner::regrole
            USING ERRCODE = 'insufficient_privilege',
                  HINT = 'Drop it, or ALTER SCHEMA extensions OWNER TO the migrating role.';
    END IF;
END;
$$;

CREATE SCHEMA auth;
COMMENT ON SCHEMA auth IS 'pyvault-tokens: API tokens that refresh themselves.';

DO $$
DECLARE
    v_schema name;
BEGIN
    SELECT n.nspname INTO v_schema
    FROM pg_catalog.pg_extension AS e
    INNER JOIN pg_catalog.pg_namespace AS n ON e.extnamespace = n.oid
    WHERE e.extname = 'pgcrypto';
    IF v_schema IS NULL THEN
        CREATE EXTENSION pgcrypto WITH SCHEMA extensions;
    ELSIF v_schema <> 'extensions' THEN
        RAISE EXCEPTION 'pgcrypto is installed in schema %, pyvault-tokens expects schema extensions', v_schema
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'Run: ALTER EXTENSION pgcrypto SET SCHEMA extensions;';
    END IF;
END;
$$;

DO $$
DECLARE
    v_role text;
BEGIN
    FOREACH v_role IN ARRAY ARRAY['pyvault_api', 'pyvault_admin', 'pyvault_monitor'] LOOP
        IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = v_role) THEN
            BEGIN
                EXECUTE pg_catalog.format('CREATE ROLE %I NOLOGIN', v_role);
            EXCEPTION WHEN duplicate_object OR unique_violation THEN
                NULL;  -- created by a concurrent migration of another database
            END;
        END IF;
    END LOOP;
END;
$$;

GRANT USAGE ON SCHEMA auth TO pyvault_api, pyvault_admin, pyvault_monitor;
