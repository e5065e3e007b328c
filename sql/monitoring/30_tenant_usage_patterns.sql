-- Usage per tenant.
CREATE OR REPLACE VIEW auth.tenant_usage_patterns AS
SELECT
    u.tenant,
    count(*) AS live_tokens,
    count(*) FILTER (WHERE u.is_idle) AS idle_tokens,
    sum(u.use_count)::bigint AS recorded_uses,
    sum(u.requests_per_day) AS requests_per_day
FROM auth.token_usage_patterns AS u
GROUP BY u.tenant;
COMMENT ON VIEW auth.tenant_usage_patterns IS
'Per tenant: live and idle tokens, recorded uses and recorded uses per day.';
REVOKE ALL ON auth.tenant_usage_patterns FROM public;
GRANT SELECT ON auth.tenant_usage_patterns TO pyvault_monitor;
