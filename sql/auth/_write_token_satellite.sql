-- Record a change of a token in its satellite: end-date the current row and insert the
-- new one, copying what does not change.
CREATE OR REPLACE FUNCTION auth._write_token_satellite(
    p_api_token_hk bytea,
    p_record_source text,
    p_expires_at timestamptz DEFAULT NULL,
    p_is_revoked boolean DEFAULT NULL,
    p_revoked_reason text DEFAULT NULL
) RETURNS void
LANGUAGE plpgsql
AS $$
DECLARE
    v_now timestamptz := pg_catalog.clock_timestamp();
    v_cur auth.api_token_s;
    v_expires_at timestamptz;
    v_is_revoked boolean;
    v_reason text;
BEGIN
    UPDATE auth.api_token_s AS s
    SET load_end_date = v_now
    WHERE s.api_token_hk = p_api_token_hk AND s.load_end_date IS NULL
    RETURNING s.* INTO v_cur;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'token has no current satellite row'
            USING ERRCODE = 'no_data_found';
    END IF;
    v_expires_at := coalesce(p_expires_at, v_cur.expires_at);
    v_is_revoked := coalesce(p_is_revoked, v_cur.is_revoked);
    v_reason := coalesce(p_revoked_reason, v_cur.revoked_reason);
    INSERT INTO auth.api_token_s (
        api_token_hk, load_date, hash_diff, token_hash, token_type, scope,
        expires_at, is_revoked, revoked_reason, record_source
    ) VALUES (
        v_cur.api_token_hk, v_now,
        auth._token_hash_diff(
            v_cur.token_hash, v_cur.token_type, v_cur.scope, v_expires_at, v_is_revoked, v_reason
        ),
        v_cur.token_hash, v_cur.token_type, v_cur.scope,
        v_expires_at, v_is_revoked, v_reason, p_record_source
    );
END;
$$;
REVOKE ALL ON FUNCTION auth._write_token_satellite(bytea, text, timestamptz, boolean, text)
FROM public;
