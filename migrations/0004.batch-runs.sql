-- depends: 0003.refresh-tables
-- A record of every batch refresh run (for the "batch job has not run" alert), and the
-- index that finds due tokens when a caller overrides the threshold.

CREATE TABLE auth.token_refresh_batch_run (
    run_id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    started_at timestamptz NOT NULL,
    finished_at timestamptz NOT NULL DEFAULT pg_catalog.clock_timestamp(),
    skipped boolean NOT NULL DEFAULT FALSE,
    dry_run boolean NOT NULL DEFAULT FALSE,
    tokens_found integer NOT NULL DEFAULT 0,
    tokens_extended integer NOT NULL DEFAULT 0,
    tokens_enqueued integer NOT NULL DEFAULT 0,
    tokens_failed integer NOT NULL DEFAULT 0
);
CREATE INDEX token_refresh_batch_run_started_idx ON auth.token_refresh_batch_run (started_at);
COMMENT ON TABLE auth.token_refresh_batch_run IS
'One row per call of auth.refresh_expiring_tokens_batch, skipped runs included.';

CREATE INDEX api_token_bridge_live_expiry_idx ON auth.api_token_bridge (expires_at)
WHERE NOT is_revoked AND successor_hk IS NULL;
