-- depends: 0001.schemas-and-roles
-- The Data Vault 2.0 core: hubs for tenant, user and API token, links for
-- user-token ownership and rotation lineage, and the token satellite.
-- A token's identity (api_token_hk) is never its secret; the satellite stores
-- only sha256 of the token.

CREATE TABLE auth.tenant_h (
    tenant_hk bytea PRIMARY KEY,
    tenant_bk text NOT NULL UNIQUE,
    load_date timestamptz NOT NULL DEFAULT pg_catalog.clock_timestamp(),
    record_source text NOT NULL
);
COMMENT ON TABLE auth.tenant_h IS 'Hub: tenants (business key tenant_bk, hash key sha256 of it).';

CREATE TABLE auth.user_h (
    user_hk bytea PRIMARY KEY,
    user_bk text NOT NULL,
    tenant_hk bytea NOT NULL REFERENCES auth.tenant_h (tenant_hk),
    load_date timestamptz NOT NULL DEFAULT pg_catalog.clock_timestamp(),
    record_source text NOT NULL,
    UNIQUE (tenant_hk, user_bk)
);
COMMENT ON TABLE auth.user_h IS 'Hub: users of a tenant.';

CREATE TABLE auth.api_token_h (
    api_token_hk bytea PRIMARY KEY,
    api_token_bk text NOT NULL UNIQUE,
    tenant_hk bytea NOT NULL REFERENCES auth.tenant_h (tenant_hk),
    load_date timestamptz NOT NULL DEFAULT pg_catalog.clock_timestamp(),
    record_source text NOT NULL
);
COMMENT ON TABLE auth.api_token_h IS
'Hub: API tokens. api_token_bk is a random public identifier, never the secret.';

CREATE TABLE auth.user_token_l (
    link_user_token_hk bytea PRIMARY KEY,
    user_hk bytea NOT NULL REFERENCES auth.user_h (user_hk),
    api_token_hk bytea NOT NULL UNIQUE REFERENCES auth.api_token_h (api_token_hk),
    tenant_hk bytea NOT NULL REFERENCES auth.tenant_h (tenant_hk),
    load_date timestamptz NOT NULL DEFAULT pg_catalog.clock_timestamp(),
    record_source text NOT NULL
);
CREATE INDEX user_token_l_user_hk_idx ON auth.user_token_l (user_hk);
COMMENT ON TABLE auth.user_token_l IS 'Link: which user a token belongs to.';

CREATE TABLE auth.token_rotation_l (
    link_token_rotation_hk bytea PRIMARY KEY,
    predecessor_hk bytea NOT NULL UNIQUE REFERENCES auth.api_token_h (api_token_hk),
    successor_hk bytea NOT NULL UNIQUE REFERENCES auth.api_token_h (api_token_hk),
    tenant_hk bytea NOT NULL REFERENCES auth.tenant_h (tenant_hk),
    load_date timestamptz NOT NULL DEFAULT pg_catalog.clock_timestamp(),
    record_source text NOT NULL,
    CHECK (predecessor_hk <> successor_hk)
);
COMMENT ON TABLE auth.token_rotation_l IS
'Link: rotation lineage. Each token has at most one successor and one predecessor, '
'so concurrent refreshes of one token cannot both succeed.';

CREATE TABLE auth.api_token_s (
    api_token_hk bytea NOT NULL REFERENCES auth.api_token_h (api_token_hk),
    load_date timestamptz NOT NULL DEFAULT pg_catalog.clock_timestamp(),
    load_end_date timestamptz,
    hash_diff bytea NOT NULL,
    token_hash bytea NOT NULL CHECK (pg_catalog.length(token_hash) = 32),
    token_type text NOT NULL CHECK (token_type IN ('API', 'PRODUCTION', 'API_KEY')),
    scope text[] NOT NULL,
    expires_at timestamptz NOT NULL,
    is_revoked boolean NOT NULL DEFAULT FALSE,
    revoked_reason text,
    record_source text NOT NULL,
    PRIMARY KEY (api_token_hk, load_date),
    CHECK (load_end_date IS NULL OR load_end_date >= load_date)
);
CREATE UNIQUE INDEX api_token_s_current_hk_idx
ON auth.api_token_s (api_token_hk) WHERE load_end_date IS NULL;
CREATE UNIQUE INDEX api_token_s_current_token_hash_idx
ON auth.api_token_s (token_hash) WHERE load_end_date IS NULL;
CREATE INDEX api_token_s_current_expiry_idx
ON auth.api_token_s (expires_at) WHERE load_end_date IS NULL AND NOT is_revoked;
COMMENT ON TABLE auth.api_token_s IS
'Satellite: token history. The current row has load_end_date NULL; token_hash is '
'sha256(convert_to(token, ''UTF8'')), never the token.';
