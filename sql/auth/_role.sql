-- The group role of a kind (api, admin, monitor, refresher) in this database: the
-- install's role prefix (auth.install_settings, default pyvault), an underscore, the kind.
CREATE OR REPLACE FUNCTION auth._role(p_kind text) RETURNS text
LANGUAGE sql
STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT s.role_prefix || '_' || p_kind FROM auth.install_settings AS s
$$;
REVOKE ALL ON FUNCTION auth._role(text) FROM public;
