-- Whether a string has the shape of a token: 'ovt_prod_' and 73 bytes in all. The one
-- format check of every public function (a malformed string of the right length simply
-- finds no row; the diagnostics say more). Checked by length and prefix, not a regex
-- (a regex cost the hot path 20%), and inlined into its callers: SQL, IMMUTABLE like
-- its body, no SET (measured with make bench against the PL/pgSQL floor).
CREATE OR REPLACE FUNCTION auth._is_token_shaped(p_token text) RETURNS boolean
LANGUAGE sql
IMMUTABLE
PARALLEL SAFE
AS $$
    SELECT p_token IS NOT NULL AND pg_catalog.octet_length(p_token) = 73
       AND pg_catalog.left(p_token, 9) = 'ovt_prod_'
$$;
REVOKE ALL ON FUNCTION auth._is_token_shaped(text) FROM public;
