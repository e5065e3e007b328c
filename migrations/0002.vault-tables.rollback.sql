DROP TABLE auth.api_token_s;
DROP TABLE auth.token_rotation_l;
DROP TABLE auth.user_token_l;
DROP TABLE auth.api_token_h;
DROP TABLE auth.user_h;
DROP TABLE auth.tenant_h;
