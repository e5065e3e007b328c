-- Every live token and whether something will refresh it before it expires: it was
-- seen recently (its holder will refresh it on use), its policy is EXTEND (the batch job
-- extends it from its hash), or a refresher service holds it. A token at its family's
-- maximum lifetime has no refresh path whatever else holds.
CREATE OR REPLACE VIEW auth.token_refresh_path AS
SELECT
    b.api_token_hk,
    b.tenant_hk,
    b.token_type,
    b.expires_at,
    b.last_used_at,
    b.refresh_after <> 'infinity'
    AND (
        coalesce(b.last_used_at > now() - c.seen_recently, FALSE)
        OR p.strategy = 'EXTEND'
        OR EXISTS (
            SELECT FROM auth.refresher_token AS r
            WHERE r.api_token_hk = b.api_token_hk
        )
    ) AS has_refresh_path
FROM auth.api_token_bridge AS b
INNER JOIN auth.token_refresh_policy AS p ON b.token_type = p.token_type
CROSS JOIN auth.monitoring_config AS c
WHERE
    NOT b.is_revoked
    AND b.successor_hk IS NULL
    AND b.valid_until > now();
COMMENT ON VIEW auth.token_refresh_path IS
'Live tokens (not revoked, not rotated, not expired) and whether they have a refresh path.';
REVOKE ALL ON auth.token_refresh_path FROM public;
GRANT SELECT ON auth.token_refresh_path TO pyvault_monitor;
