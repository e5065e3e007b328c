-- The schema that the pg_cron extension created in this database, or NULL where pg_cron
-- is not installed here. Found through the extension's membership records in pg_depend,
-- never by the name cron: any login that may CREATE in the database can make a schema
-- called cron, with look-alike tables and functions that would run as our owner.
CREATE OR REPLACE FUNCTION auth._cron_schema() RETURNS name
LANGUAGE sql
STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT n.nspname
    FROM pg_catalog.pg_extension AS e
    INNER JOIN pg_catalog.pg_depend AS d
        ON d.refclassid = 'pg_catalog.pg_extension'::pg_catalog.regclass
       AND d.refobjid = e.oid
       AND d.classid = 'pg_catalog.pg_namespace'::pg_catalog.regclass
       AND d.deptype = 'e'
    INNER JOIN pg_catalog.pg_namespace AS n ON d.objid = n.oid
    WHERE e.extname = 'pg_cron'
$$;
REVOKE ALL ON FUNCTION auth._cron_schema() FROM public;
