-- A fresh token: ovt_prod_ followed by 64 lower-case hex characters (256 random bits).
CREATE OR REPLACE FUNCTION auth._new_token_secret() RETURNS text
LANGUAGE sql
VOLATILE
AS $$
    SELECT 'ovt_prod_' || pg_catalog.encode(extensions.gen_random_bytes(32), 'hex')
$$;
REVOKE ALL ON FUNCTION auth._new_token_secret() FROM public;
