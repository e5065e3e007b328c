BEGIN;
SELECT plan(9);

SELECT has_schema('auth', 'schema auth exists');
SELECT has_role('pyvault_api', 'role pyvault_api exists');
SELECT has_role('pyvault_admin', 'role pyvault_admin exists');
SELECT has_role('pyvault_monitor', 'role pyvault_monitor exists');
SELECT has_role('pyvault_refresher', 'role pyvault_refresher exists');

SELECT is_empty(
    $$ SELECT p.oid::regprocedure::text
       FROM pg_proc AS p
       WHERE p.pronamespace IN ('auth'::regnamespace)
         AND p.prosecdef
         AND NOT coalesce(p.proconfig, '{}') @> '{"search_path=pg_catalog, pg_temp"}' $$,
    'every SECURITY DEFINER function pins search_path = pg_catalog, pg_temp'
);

SELECT is_empty(
    $$ SELECT p.oid::regprocedure::text
       FROM pg_proc AS p
       WHERE p.pronamespace = 'auth'::regnamespace
         AND has_function_privilege('public', p.oid, 'EXECUTE') $$,
    'no function in auth is executable by PUBLIC'
);

SELECT is_empty(
    $$ SELECT c.relname::text
       FROM pg_class AS c
       WHERE c.relnamespace = 'auth'::regnamespace AND c.relkind IN ('r', 'p')
         AND (has_table_privilege('pyvault_api', c.oid, 'SELECT')
              OR has_table_privilege('pyvault_api', c.oid, 'INSERT')
              OR has_table_privilege('pyvault_api', c.oid, 'UPDATE')
              OR has_table_privilege('pyvault_api', c.oid, 'DELETE')) $$,
    'pyvault_api can read or write no table'
);

SELECT is_empty(
    $$ SELECT p.oid::regprocedure::text
       FROM pg_proc AS p
       WHERE p.pronamespace = 'auth'::regnamespace
         AND p.proname NOT LIKE '\_%'
         AND obj_description(p.oid, 'pg_proc') IS NULL $$,
    'every public function has a COMMENT'
);

SELECT * FROM finish();
ROLLBACK;
