-- CASCADE: functions in sql/ that use these row types go too; migrate re-applies them.
DROP TABLE auth.api_token_s CASCADE;
DROP TABLE auth.token_rotation_l CASCADE;
DROP TABLE auth.user_token_l CASCADE;
DROP TABLE auth.api_token_h CASCADE;
DROP TABLE auth.user_h CASCADE;
DROP TABLE auth.tenant_h CASCADE;
