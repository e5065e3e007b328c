-- Limit: the raw index probe on the bridge that validation is built on.
\set i random(:first, :last)
SELECT b.user_hk, b.tenant_hk, b.scope, b.expires_at
FROM auth.api_token_bridge AS b
WHERE b.token_hash = sha256(convert_to((SELECT t.token FROM bench.token AS t WHERE t.i = :i), 'UTF8'));
