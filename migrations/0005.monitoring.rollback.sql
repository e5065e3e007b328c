-- CASCADE: views and functions in sql/ that use these go too; migrate re-applies them.
DROP TABLE auth.refresher_token CASCADE;
DROP TABLE auth.refresher_heartbeat CASCADE;
DROP TABLE auth.monitoring_config CASCADE;
ALTER TABLE auth.token_refresh_policy
DROP COLUMN predictive_min_gaps CASCADE,
DROP COLUMN predictive_margin CASCADE;
