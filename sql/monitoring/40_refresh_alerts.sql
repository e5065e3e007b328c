-- The open alerts, one row each (see auth.get_refresh_alerts).
CREATE OR REPLACE VIEW auth.refresh_alerts AS
SELECT
    a.alert,
    a.severity,
    a.message,
    a.observed,
    a.since
FROM auth.get_refresh_alerts() AS a;
COMMENT ON VIEW auth.refresh_alerts IS
'Open alerts: REFRESH_FAILURE_RATE, REUSE_DETECTED (critical); EXPIRING_WITHOUT_REFRESH_PATH, '
'BATCH_JOB_STALE, CRON_JOB_FAILED, REFRESHER_NOT_SEEN (warning). Thresholds: '
'auth.monitoring_config.';
REVOKE ALL ON auth.refresh_alerts FROM public;
GRANT SELECT ON auth.refresh_alerts TO pyvault_monitor;
