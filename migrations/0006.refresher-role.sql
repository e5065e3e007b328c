-- depends: 0005.monitoring
-- The refresher service's own NOLOGIN group role, so that the API role no longer needs
-- what only the refresher does (the heartbeat). It gets the status, refresh and heartbeat
-- functions (granted under each function in sql/) and no table; LISTEN needs no privilege.
-- Roles are cluster-wide, so a second database in the same cluster (or a concurrent
-- migration of one) may have created it already: that is not an error.

DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'pyvault_refresher') THEN
        BEGIN
            CREATE ROLE pyvault_refresher NOLOGIN;
        EXCEPTION WHEN duplicate_object OR unique_violation THEN
            NULL;  -- created by a concurrent migration of another database
        END;
    END IF;
END;
$$;

GRANT USAGE ON SCHEMA auth TO pyvault_refresher;
