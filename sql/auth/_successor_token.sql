-- The successor token kept for a rotated token, decrypted with the key only its holder can
-- derive (auth._successor_key). Inlined into its two callers.
CREATE OR REPLACE FUNCTION auth._successor_token(p_secret bytea, p_token text) RETURNS text
LANGUAGE sql
STABLE
PARALLEL SAFE
AS $$
    SELECT pg_catalog.convert_from(
        extensions.decrypt(p_secret, auth._successor_key(p_token), 'aes'), 'UTF8')
$$;
REVOKE ALL ON FUNCTION auth._successor_token(bytea, text) FROM public;
