-- depends: 0006.refresher-role
-- Two satellite indexes that no query needs any more: validation, the batch and the
-- monitoring views read the bridge, and the diagnostics find the current satellite row
-- by api_token_hk. Each cost an index entry on every satellite insert and on every
-- end-dated row (a satellite end-date is never a HOT update), that is four per refresh.
-- token_hash stays unique where it matters, in the bridge's primary key.

DROP INDEX auth.api_token_s_current_token_hash_idx;
DROP INDEX auth.api_token_s_current_expiry_idx;
