-- The hash key of a token's own vault rows (its hub row and its links): the first 16
-- bytes of sha256, the length of Data Vault 2.0's MD5 keys. 128 bits leave a collision
-- among 10^10 tokens at about 10^-19, and one would fail a primary key, never match.
-- Each token key is written 6 times and indexed 7 times, so the 16 bytes saved are
-- about 250 bytes a token (make bench, sizes). Tenant and user keys keep all 32 bytes:
-- applications hold them (validation returns them), and register_* recomputes them.
-- Tokens issued before keep their 32-byte keys; a key is opaque, so both work side by
-- side. SQL and IMMUTABLE like its body, so callers inline it.
CREATE OR REPLACE FUNCTION auth._hash_key(p_input bytea) RETURNS bytea
LANGUAGE sql
IMMUTABLE
PARALLEL SAFE
AS $$
    SELECT pg_catalog.substr(pg_catalog.sha256(p_input), 1, 16)
$$;
REVOKE ALL ON FUNCTION auth._hash_key(bytea) FROM public;
