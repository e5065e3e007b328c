-- depends: 0007.lean-satellite-indexes
-- The batch's due index, and two costs it paid per token that bought nothing:
-- - api_token_bridge_refresh_due_idx gains token_hash as a second key, so that a batch
--   run resumes after the exact row where its last batch ended even when thousands of
--   tokens share one refresh_after (every token one run extends gets the same one).
-- - api_token_bridge_live_expiry_idx served only the batch's explicit-threshold mode.
--   The due index serves that mode too (a token expiring within the threshold has
--   refresh_after <= now + threshold - the smallest policy threshold), and this one cost
--   an entry on every issued token and every extension.
-- - The outbox's foreign key to the token hub re-proved, at 18 us per enqueued token,
--   what the bridge's own key already guarantees: outbox rows are written only by the
--   batch, from bridge rows, in the same statement. The event log has none either.

DROP INDEX auth.api_token_bridge_refresh_due_idx;
CREATE INDEX api_token_bridge_refresh_due_idx ON auth.api_token_bridge (refresh_after, token_hash)
WHERE NOT is_revoked AND successor_hk IS NULL AND refresh_enqueued_at IS NULL;
DROP INDEX auth.api_token_bridge_live_expiry_idx;
ALTER TABLE auth.token_refresh_outbox DROP CONSTRAINT token_refresh_outbox_api_token_hk_fkey;
