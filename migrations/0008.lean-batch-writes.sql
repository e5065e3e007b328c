-- depends: 0007.lean-satellite-indexes
-- Two costs the batch paid per token that bought nothing:
-- - api_token_bridge_live_expiry_idx served only the batch's explicit-threshold mode.
--   The due index serves that mode too (a token expiring within the threshold has
--   refresh_after <= now + threshold - the smallest policy threshold), and this one cost
--   an entry on every issued token and every extension.
-- - The outbox's foreign key to the token hub re-proved, at 18 us per enqueued token,
--   what the bridge's own key already guarantees: outbox rows are written only by the
--   batch, from bridge rows, in the same statement. The event log has none either.

DROP INDEX auth.api_token_bridge_live_expiry_idx;
ALTER TABLE auth.token_refresh_outbox DROP CONSTRAINT token_refresh_outbox_api_token_hk_fkey;
