-- Refresh attempts per hour, by trigger, outcome and reason.
CREATE OR REPLACE VIEW auth.refresh_metrics_hourly AS
SELECT
    e.refresh_trigger,
    e.outcome,
    e.reason::text AS reason,
    date_trunc('hour', e.occurred_at) AS hour,  -- noqa: RF04
    count(*) AS attempts
FROM auth.token_refresh_event AS e
GROUP BY date_trunc('hour', e.occurred_at), e.refresh_trigger, e.outcome, e.reason;
COMMENT ON VIEW auth.refresh_metrics_hourly IS
'Refresh attempts per hour by trigger (ON_DEMAND, FORCED, BATCH, SERVICE, DIAGNOSTIC), '
'outcome and reason code.';
REVOKE ALL ON auth.refresh_metrics_hourly FROM public;
GRANT SELECT ON auth.refresh_metrics_hourly TO pyvault_monitor;
