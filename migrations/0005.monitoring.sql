-- depends: 0004.batch-runs
-- Monitoring and predictive refresh: the estimator's settings per policy, alert
-- thresholds, and the refresher's heartbeat with the tokens it holds.

ALTER TABLE auth.token_refresh_policy
ADD COLUMN predictive_margin numeric NOT NULL DEFAULT 1.5 CHECK (predictive_margin >= 1),
ADD COLUMN predictive_min_gaps integer NOT NULL DEFAULT 2 CHECK (predictive_min_gaps >= 1);
COMMENT ON COLUMN auth.token_refresh_policy.predictive_margin IS
'Predictive refresh: the next use is expected within mean gap x margin of the last use.';
COMMENT ON COLUMN auth.token_refresh_policy.predictive_min_gaps IS
'Predictive refresh: gaps between recorded uses needed before predicting (fewer: none).';

CREATE TABLE auth.monitoring_config (
    id boolean PRIMARY KEY DEFAULT TRUE CHECK (id),
    failure_rate_threshold numeric NOT NULL DEFAULT 0.05
    CHECK (failure_rate_threshold BETWEEN 0 AND 1),
    failure_min_attempts integer NOT NULL DEFAULT 5 CHECK (failure_min_attempts >= 1),
    batch_interval interval NOT NULL DEFAULT '6 hours',
    refresher_stale_after interval NOT NULL DEFAULT '2 hours',
    seen_recently interval NOT NULL DEFAULT '7 days',
    idle_after interval NOT NULL DEFAULT '7 days'
);
INSERT INTO auth.monitoring_config DEFAULT VALUES;
COMMENT ON TABLE auth.monitoring_config IS
'Alert thresholds (one row): failure rate over the last hour and the attempts it needs, '
'the batch schedule interval (alert after twice it), when the refresher counts as gone, '
'and what counts as seen recently or idle.';

CREATE TABLE auth.refresher_heartbeat (
    instance text PRIMARY KEY,
    last_seen_at timestamptz NOT NULL,
    tokens_held integer NOT NULL DEFAULT 0
);
COMMENT ON TABLE auth.refresher_heartbeat IS 'The last sweep of each refresher service instance.';

CREATE TABLE auth.refresher_token (
    api_token_hk bytea PRIMARY KEY REFERENCES auth.api_token_h (api_token_hk),
    instance text NOT NULL,
    seen_at timestamptz NOT NULL
);
COMMENT ON TABLE auth.refresher_token IS
'Tokens a refresher service holds (as of its last sweep): they have a refresh path.';
