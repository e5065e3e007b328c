-- Usage per live token from the debounced usage record.
CREATE OR REPLACE VIEW auth.token_usage_patterns AS
SELECT
    h.api_token_bk AS token_id,
    tn.tenant_bk AS tenant,
    t.token_type,
    t.expires_at,
    u.first_used_at,
    u.last_used_at,
    coalesce(u.use_count, 0) AS use_count,
    coalesce(u.use_count, 0)
    / greatest(extract(EPOCH FROM now() - coalesce(u.first_used_at, now())) / 86400, 1)
        AS requests_per_day,
    make_interval(secs => u.mean_gap_seconds) AS typical_gap,
    make_interval(secs => u.max_gap_seconds) AS max_gap,
    coalesce(u.last_used_at < now() - c.idle_after, TRUE) AS is_idle
FROM auth.token_refresh_path AS t
INNER JOIN auth.api_token_h AS h ON t.api_token_hk = h.api_token_hk
INNER JOIN auth.tenant_h AS tn ON t.tenant_hk = tn.tenant_hk
CROSS JOIN auth.monitoring_config AS c
LEFT JOIN auth.api_token_usage AS u ON t.api_token_hk = u.api_token_hk;
COMMENT ON VIEW auth.token_usage_patterns IS
'Per live token: recorded uses (at most one per debounce interval, so requests_per_day '
'counts recorded uses), the typical and largest gap between them, last use, and whether '
'it is idle (no use within monitoring_config.idle_after, or never used).';
REVOKE ALL ON auth.token_usage_patterns FROM public;
GRANT SELECT ON auth.token_usage_patterns TO pyvault_monitor;
