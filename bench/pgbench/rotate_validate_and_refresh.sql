-- Rotation on use: auth.validate_and_refresh_api_token on a near-expiry token.
-- Each client takes its own block of :per_client tokens from :base, one per transaction
-- (:n counts this client's transactions; run with -t :per_client -D n=0), so no token repeats.
\set i :base + :client_id * :per_client + :n
\set n :n + 1
SELECT * FROM auth.validate_and_refresh_api_token((SELECT t.token FROM bench.token AS t WHERE t.i = :i));
