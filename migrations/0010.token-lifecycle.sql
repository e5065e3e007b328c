-- depends: 0009.force-rate-limit
-- Cost follows live tokens, not history (DESIGN.md section 10).
-- - auth.spent_token: a rotated token whose grace has ended leaves the bridge (whose
--   index every validation probes) and its vault rows, and keeps only what reuse
--   detection needs for the rest of its family's life: its hash, identity, family and
--   generation (about 180 bytes with its index entries, against some 1.5 kB before).
-- - auth.retention_policy: how long history is kept (one row, documented in the README).
-- - The bridge finds rotated tokens and family heads by partial indexes that hold only
--   those rows; the secret index they replace held a subset of the first.
-- - security_event no longer references the hub: a reuse can be recorded for a token
--   whose vault rows are gone, and the event outlives them by its own retention.

-- A hash index on token_hash: its entries hold a 4-byte hash code, not the 32-byte key,
-- so they cost about a third of a B-tree's (measured: 79 bytes per entry for a B-tree on
-- random hashes). The hashes come from the bridge's primary key, so they are unique.
CREATE TABLE auth.spent_token (
    token_hash bytea NOT NULL,
    api_token_hk bytea NOT NULL,
    family_hk bytea NOT NULL,
    spent_at timestamptz NOT NULL,
    generation integer NOT NULL
);
CREATE INDEX spent_token_hash_idx ON auth.spent_token USING hash (token_hash);
CREATE INDEX spent_token_family_idx ON auth.spent_token (family_hk);
COMMENT ON TABLE auth.spent_token IS
'Rotated tokens whose grace window has ended, kept while their family lives so that '
'presenting one again is detected as reuse. token_hash is sha256 of the token.';

CREATE TABLE auth.retention_policy (
    id boolean PRIMARY KEY DEFAULT TRUE CHECK (id),
    refresh_events interval NOT NULL DEFAULT '30 days' CHECK (refresh_events >= '1 day'),
    security_events interval NOT NULL DEFAULT '365 days' CHECK (security_events >= '1 day'),
    batch_runs interval NOT NULL DEFAULT '30 days' CHECK (batch_runs >= '1 day'),
    outbox interval NOT NULL DEFAULT '30 days' CHECK (outbox >= '1 day'),
    dead_families interval NOT NULL DEFAULT '90 days' CHECK (dead_families >= '0 days')
);
INSERT INTO auth.retention_policy DEFAULT VALUES;
COMMENT ON TABLE auth.retention_policy IS
'Retention (one row): refresh events, security events, batch runs and settled outbox '
'rows older than this are deleted by auth.prune_token_history; a family whose newest '
'token expired longer than dead_families ago is removed with all its tokens.';

DROP INDEX auth.api_token_bridge_dead_secret_idx;
CREATE INDEX api_token_bridge_rotated_idx ON auth.api_token_bridge (valid_until)
WHERE successor_hk IS NOT NULL AND NOT is_revoked;
CREATE INDEX api_token_bridge_head_expiry_idx ON auth.api_token_bridge (expires_at)
WHERE successor_hk IS NULL;

ALTER TABLE auth.security_event DROP CONSTRAINT security_event_api_token_hk_fkey;

-- The rows a validation updates (a recorded use, at most once per debounce) keep room on
-- their page, so the update is HOT: no new entry in any index, and the old version is
-- pruned with the page instead of waiting for VACUUM. Measured over 200 simulated days
-- with a weekly VACUUM: the bridge grew to 2.9 times its day-one size at fillfactor 100.
ALTER TABLE auth.api_token_bridge SET (fillfactor = 75);
ALTER TABLE auth.api_token_usage SET (fillfactor = 75);

-- Per-token event lookups are equality only: a hash index is a third of the B-tree.
DROP INDEX auth.token_refresh_event_token_idx;
CREATE INDEX token_refresh_event_token_idx ON auth.token_refresh_event USING hash (api_token_hk);
