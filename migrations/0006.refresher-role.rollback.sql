-- Take back what this database granted pyvault_refresher (the functions in sql/ stay and
-- keep their other grants), then drop the role. A role that another database still uses
-- (it holds privileges there) is left for that database's own rollback.

DO $$
BEGIN
    IF EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'pyvault_refresher') THEN
        REVOKE ALL ON ALL ROUTINES IN SCHEMA auth FROM pyvault_refresher;
        REVOKE ALL ON ALL TABLES IN SCHEMA auth FROM pyvault_refresher;
        REVOKE ALL ON SCHEMA auth FROM pyvault_refresher;
        BEGIN
            DROP ROLE pyvault_refresher;
        EXCEPTION WHEN dependent_objects_still_exist THEN
            RAISE NOTICE 'role pyvault_refresher is still used by another database; left in place';
        END;
    END IF;
END;
$$;
