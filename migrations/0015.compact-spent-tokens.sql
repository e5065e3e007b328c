-- depends: 0014.one-key-per-vault-row
-- A spent token keeps only what reuse detection needs: a key to recognise it by, and
-- the family to revoke. Over 200 simulated days a live token leaves 8 or 9 spent ones
-- behind, so their rows were the largest part of what storage grows by (175 bytes each,
-- 1,524 bytes a live token by day 200 at 2,000 clients). Now 126:
-- - token_key, a 16-byte key of the token's hash (auth._hash_key(token_hash)), instead
--   of the 32-byte hash: 2^128 makes a false match as unlikely as a forged token;
-- - no api_token_hk: once its vault rows are pruned a spent token's key names nothing,
--   and the family (the holder is its live token's user) is what a reuse revokes. Its
--   security event has a NULL api_token_hk;
-- - no spent_at, which no query read.
-- Existing rows are rewritten once here, in this transaction.

ALTER TABLE auth.spent_token DROP COLUMN api_token_hk, DROP COLUMN spent_at;
ALTER TABLE auth.spent_token RENAME COLUMN token_hash TO token_key;
-- auth._hash_key's body (sql/ is applied after the migrations).
UPDATE auth.spent_token SET token_key = pg_catalog.substr(pg_catalog.sha256(token_key), 1, 16);
ALTER TABLE auth.spent_token ADD CONSTRAINT spent_token_token_key_check
CHECK (octet_length(token_key) = 16);
ALTER INDEX auth.spent_token_hash_idx RENAME TO spent_token_key_idx;
REINDEX INDEX auth.spent_token_key_idx;
COMMENT ON TABLE auth.spent_token IS
'Rotated tokens whose grace window has ended, kept while their family lives so that '
'presenting one again is detected as reuse. token_key is auth._hash_key of the token''s '
'sha256, never the token.';

ALTER TABLE auth.security_event ALTER COLUMN api_token_hk DROP NOT NULL;
COMMENT ON COLUMN auth.security_event.api_token_hk IS
'The token concerned; NULL for the reuse of a spent token, whose vault rows are gone '
'(family_hk says which family).';
