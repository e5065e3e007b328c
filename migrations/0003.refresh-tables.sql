-- depends: 0002.vault-tables
-- Operational tables outside the vault: refresh policy per token type, the
-- validation bridge (one row per token that answers a validation in one probe),
-- debounced usage, append-only refresh and security events, and the outbox that
-- the background refresher drains.

CREATE TABLE auth.token_refresh_policy (
    token_type text PRIMARY KEY CHECK (token_type IN ('API', 'PRODUCTION', 'API_KEY')),
    strategy text NOT NULL DEFAULT 'ROTATE' CHECK (strategy IN ('ROTATE', 'EXTEND')),
    refresh_threshold interval NOT NULL DEFAULT '7 days'
    CHECK (refresh_threshold >= '0 seconds'),
    time_to_live interval NOT NULL DEFAULT '30 days' CHECK (time_to_live > '0 seconds'),
    max_lifetime interval NOT NULL DEFAULT '365 days',
    grace_period interval NOT NULL DEFAULT '60 seconds'
    CHECK (grace_period >= '0 seconds'),
    reuse_action text NOT NULL DEFAULT 'REVOKE_FAMILY'
    CHECK (reuse_action IN ('REVOKE_FAMILY', 'REJECT')),
    usage_debounce interval NOT NULL DEFAULT '60 seconds'
    CHECK (usage_debounce >= '0 seconds'),
    predictive_refresh boolean NOT NULL DEFAULT TRUE,
    updated_at timestamptz NOT NULL DEFAULT pg_catalog.now(),
    CHECK (max_lifetime >= time_to_live),
    CHECK (refresh_threshold < time_to_live)
);
COMMENT ON TABLE auth.token_refresh_policy IS
'Refresh policy per token type: when to refresh, for how long, up to which '
'family lifetime, by rotation or extension, and the grace window for rotated tokens.';

INSERT INTO auth.token_refresh_policy (token_type, strategy, time_to_live)
VALUES
('API', 'ROTATE', '30 days'),
('PRODUCTION', 'ROTATE', '30 days'),
('API_KEY', 'EXTEND', '90 days');

CREATE TABLE auth.api_token_bridge (
    token_hash bytea PRIMARY KEY,
    api_token_hk bytea NOT NULL UNIQUE REFERENCES auth.api_token_h (api_token_hk),
    user_hk bytea NOT NULL,
    tenant_hk bytea NOT NULL,
    token_type text NOT NULL REFERENCES auth.token_refresh_policy (token_type),
    scope text[] NOT NULL,
    issued_at timestamptz NOT NULL,
    expires_at timestamptz NOT NULL,
    valid_until timestamptz NOT NULL,
    is_revoked boolean NOT NULL DEFAULT FALSE,
    refresh_after timestamptz NOT NULL,
    record_use_after timestamptz NOT NULL DEFAULT '-infinity',
    last_used_at timestamptz,
    family_hk bytea NOT NULL,
    family_started_at timestamptz NOT NULL,
    generation integer NOT NULL DEFAULT 0,
    predecessor_hk bytea,
    successor_hk bytea,
    successor_secret bytea,
    CHECK (valid_until <= expires_at),
    CHECK (successor_secret IS NULL OR successor_hk IS NOT NULL)
);
CREATE INDEX api_token_bridge_family_idx ON auth.api_token_bridge (family_hk);
CREATE INDEX api_token_bridge_refresh_due_idx ON auth.api_token_bridge (refresh_after)
WHERE NOT is_revoked AND successor_hk IS NULL;
CREATE INDEX api_token_bridge_dead_secret_idx ON auth.api_token_bridge (valid_until)
WHERE successor_secret IS NOT NULL;
COMMENT ON TABLE auth.api_token_bridge IS
'Bridge: one row per token with everything a validation needs, keyed by token_hash, '
'kept in step with the vault in the same transaction. valid_until is expires_at, or '
'the end of the grace window once the successor is in use; refresh_after is when a '
'use refreshes the token (infinity when no refresh is possible); successor_secret is '
'the successor token encrypted under a key derived from this token. Derived data: '
'user, tenant and lineage are checked by the vault''s own keys in the same transaction, '
'so the bridge repeats only the key to its hub (each foreign key costs every rotation).';

CREATE TABLE auth.api_token_usage (
    api_token_hk bytea PRIMARY KEY REFERENCES auth.api_token_h (api_token_hk),
    tenant_hk bytea NOT NULL REFERENCES auth.tenant_h (tenant_hk),
    first_used_at timestamptz NOT NULL,
    last_used_at timestamptz NOT NULL,
    use_count bigint NOT NULL DEFAULT 1,
    gap_count integer NOT NULL DEFAULT 0,
    mean_gap_seconds double precision,
    max_gap_seconds double precision
);
COMMENT ON TABLE auth.api_token_usage IS
'Debounced usage: at most one update per token per usage_debounce. use_count counts '
'recorded uses, not requests; the gaps are between recorded uses.';

CREATE TABLE auth.token_refresh_event (
    event_id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    occurred_at timestamptz NOT NULL DEFAULT pg_catalog.clock_timestamp(),
    api_token_hk bytea NOT NULL,
    tenant_hk bytea NOT NULL,
    refresh_trigger text NOT NULL
    CHECK (refresh_trigger IN ('ON_DEMAND', 'FORCED', 'BATCH', 'SERVICE', 'DIAGNOSTIC')),
    outcome text NOT NULL
    CHECK (outcome IN (
        'ROTATED', 'EXTENDED', 'ALREADY_REFRESHED', 'NOT_NEEDED',
        'ENQUEUED', 'REJECTED', 'FAILED'
    )),
    reason varchar(100) NOT NULL,
    successor_hk bytea,
    old_expires_at timestamptz,
    new_expires_at timestamptz,
    detail jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX token_refresh_event_occurred_idx ON auth.token_refresh_event (occurred_at);
CREATE INDEX token_refresh_event_token_idx ON auth.token_refresh_event (api_token_hk);
COMMENT ON TABLE auth.token_refresh_event IS
'Append-only log of refresh attempts: trigger, outcome and reason code. Never a secret.';

CREATE TABLE auth.security_event (
    event_id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    occurred_at timestamptz NOT NULL DEFAULT pg_catalog.clock_timestamp(),
    event_type text NOT NULL CHECK (event_type IN ('TOKEN_REUSE', 'TOKEN_REVOKED')),
    api_token_hk bytea NOT NULL REFERENCES auth.api_token_h (api_token_hk),
    family_hk bytea NOT NULL,
    tenant_hk bytea NOT NULL,
    tokens_revoked integer NOT NULL DEFAULT 0,
    detail jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX security_event_occurred_idx ON auth.security_event (occurred_at);
COMMENT ON TABLE auth.security_event IS
'Append-only security log: detected token reuse and revocations.';

CREATE TABLE auth.token_refresh_outbox (
    outbox_id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    api_token_hk bytea NOT NULL REFERENCES auth.api_token_h (api_token_hk),
    tenant_hk bytea NOT NULL,
    reason varchar(100) NOT NULL,
    expires_at timestamptz NOT NULL,
    enqueued_at timestamptz NOT NULL DEFAULT pg_catalog.clock_timestamp(),
    attempts integer NOT NULL DEFAULT 0,
    claimed_at timestamptz,
    processed_at timestamptz,
    outcome text
);
CREATE UNIQUE INDEX token_refresh_outbox_pending_idx
ON auth.token_refresh_outbox (api_token_hk) WHERE processed_at IS NULL;
COMMENT ON TABLE auth.token_refresh_outbox IS
'Tokens that need their holder to refresh them (ROTATE policy, found by the batch job). '
'At most one pending row per token.';
