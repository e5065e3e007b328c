-- Limit, satellite: the same probe against the current rows of auth.api_token_s.
\set i random(:first, :last)
SELECT api_token_hk, scope, expires_at, is_revoked
FROM auth.api_token_s
WHERE token_hash = sha256(convert_to('ovt_prod_' || encode(sha256(convert_to('bench' || :i, 'UTF8')), 'hex'), 'UTF8')) AND load_end_date IS NULL;
