-- Forced rotation: auth.refresh_production_token_enhanced(token, 7, true) on a near-expiry
-- token. Distinct tokens per transaction as in rotate_validate_and_refresh.sql.
\set i :base + :client_id * :per_client + :n
\set n :n + 1
SELECT * FROM auth.refresh_production_token_enhanced((SELECT t.token FROM bench.token AS t WHERE t.i = :i), 7, TRUE);
