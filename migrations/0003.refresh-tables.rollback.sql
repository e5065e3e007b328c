-- CASCADE: functions in sql/ that use these row types go too; migrate re-applies them.
DROP TABLE auth.token_refresh_outbox CASCADE;
DROP TABLE auth.security_event CASCADE;
DROP TABLE auth.token_refresh_event CASCADE;
DROP TABLE auth.api_token_usage CASCADE;
DROP TABLE auth.api_token_bridge CASCADE;
DROP TABLE auth.token_refresh_policy CASCADE;
