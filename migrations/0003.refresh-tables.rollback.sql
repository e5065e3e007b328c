DROP TABLE auth.token_refresh_outbox;
DROP TABLE auth.security_event;
DROP TABLE auth.token_refresh_event;
DROP TABLE auth.api_token_usage;
DROP TABLE auth.api_token_bridge;
DROP TABLE auth.token_refresh_policy;
