-- The full hashes, identities and times of spent tokens cannot come back, so the older
-- code could not recognise these rows: they go. Their families' live tokens are not
-- affected; presenting one of those spent tokens is then an unknown token.
DELETE FROM auth.spent_token;
ALTER INDEX auth.spent_token_key_idx RENAME TO spent_token_hash_idx;
ALTER TABLE auth.spent_token DROP CONSTRAINT spent_token_token_key_check;
ALTER TABLE auth.spent_token RENAME COLUMN token_key TO token_hash;
ALTER TABLE auth.spent_token
ADD COLUMN api_token_hk bytea NOT NULL,
ADD COLUMN spent_at timestamptz NOT NULL;
COMMENT ON TABLE auth.spent_token IS
'Rotated tokens whose grace window has ended, kept while their family lives so that '
'presenting one again is detected as reuse. token_hash is sha256 of the token.';

UPDATE auth.security_event SET api_token_hk = family_hk
WHERE api_token_hk IS NULL;
ALTER TABLE auth.security_event ALTER COLUMN api_token_hk SET NOT NULL;
COMMENT ON COLUMN auth.security_event.api_token_hk IS NULL;
