-- depends: 0003.refresh-tables
-- Batch refresh support: a record of every batch run (for the "batch job has not run"
-- alert); refresh_enqueued_at on the bridge, so a ROTATE token handed to the outbox
-- leaves the due index and later batches never scan it again; and the index that finds
-- due tokens when a caller overrides the threshold.

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

ALTER TABLE auth.api_token_bridge ADD COLUMN refresh_enqueued_at timestamptz;
COMMENT ON COLUMN auth.api_token_bridge.refresh_enqueued_at IS
'When the batch job put this ROTATE token in the outbox for its holder.';

DROP INDEX auth.api_token_bridge_refresh_due_idx;
CREATE INDEX api_token_bridge_refresh_due_idx ON auth.api_token_bridge (refresh_after)
WHERE NOT is_revoked AND successor_hk IS NULL AND refresh_enqueued_at IS NULL;

CREATE INDEX api_token_bridge_live_expiry_idx ON auth.api_token_bridge (expires_at)
WHERE NOT is_revoked AND successor_hk IS NULL AND refresh_enqueued_at IS NULL;
