-- Limit: the raw index probe on the bridge that validation is built on.
\set i random(:first, :last)
SELECT user_hk, tenant_hk, scope, expires_at
FROM auth.api_token_bridge
WHERE token_hash = sha256(convert_to('ovt_prod_' || encode(sha256(convert_to('bench' || :i, 'UTF8')), 'hex'), 'UTF8'));
