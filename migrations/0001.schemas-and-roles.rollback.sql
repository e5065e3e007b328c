-- Remove the schema, pgcrypto (unless something else uses it) and the roles.
-- A role that another database still uses (it holds privileges there) is left for
-- that database's own rollback.

DROP SCHEMA IF EXISTS auth CASCADE;

DO $$
BEGIN
    BEGIN
        DROP EXTENSION IF EXISTS pgcrypto;
    EXCEPTION WHEN dependent_objects_still_exist THEN
        RAISE NOTICE 'pgcrypto is used by other objects; left in place';
    END;
    IF NOT EXISTS (
        SELECT FROM pg_catalog.pg_class AS c
        INNER JOIN pg_catalog.pg_namespace AS n ON c.relnamespace = n.oid
        WHERE n.nspname = 'extensions'
    ) AND NOT EXISTS (
        SELECT FROM pg_catalog.pg_proc AS p
        INNER JOIN pg_catalog.pg_namespace AS n ON p.pronamespace = n.oid
        WHERE n.nspname = 'extensions'
    ) THEN
        DROP SCHEMA IF EXISTS extensions;
    END IF;
END;
$$;

DO $$
DECLARE
    v_role text;
BEGIN
    FOREACH v_role IN ARRAY ARRAY['pyvault_api', 'pyvault_admin', 'pyvault_monitor'] LOOP
        BEGIN
            EXECUTE pg_catalog.format('DROP ROLE IF EXISTS %I', v_role);
        EXCEPTION WHEN dependent_objects_still_exist THEN
            RAISE NOTICE 'role % is still used by another database; left in place', v_role;
        END;
    END LOOP;
END;
$$;
