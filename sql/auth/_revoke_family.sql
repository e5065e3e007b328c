-- Revoke every live token of a rotation family, newest generation first (the order
-- rotation locks in), erase their kept successors and close their outbox rows.
CREATE OR REPLACE FUNCTION auth._revoke_family(
    p_family_hk bytea,
    p_reason text,
    p_record_source text
) RETURNS integer
LANGUAGE plpgsql
AS $$
DECLARE
    v_row record;
    v_count integer := 0;
    v_pass integer;
BEGIN
    -- Repeat until a pass finds nothing: a rotation that held a row lock while we
    -- waited may have committed a successor our earlier snapshot could not see.
    LOOP
        v_pass := 0;
        FOR v_row IN
            SELECT b.token_hash, b.api_token_hk
            FROM auth.api_token_bridge AS b
            WHERE b.family_hk = p_family_hk AND NOT b.is_revoked
            ORDER BY b.generation DESC
            FOR UPDATE
        LOOP
            UPDATE auth.api_token_bridge AS b
            SET is_revoked = TRUE, successor_secret = NULL, refresh_after = 'infinity'
            WHERE b.token_hash = v_row.token_hash AND NOT b.is_revoked;
            IF FOUND THEN
                PERFORM auth._write_token_satellite(
                    v_row.api_token_hk, p_record_source,
                    p_is_revoked => TRUE, p_revoked_reason => p_reason
                );
                v_pass := v_pass + 1;
            END IF;
        END LOOP;
        EXIT WHEN v_pass = 0;
        v_count := v_count + v_pass;
    END LOOP;

    UPDATE auth.token_refresh_outbox AS o
    SET processed_at = pg_catalog.clock_timestamp(), outcome = 'REVOKED'
    FROM auth.api_token_bridge AS b
    WHERE b.family_hk = p_family_hk
      AND o.api_token_hk = b.api_token_hk
      AND o.processed_at IS NULL;

    RETURN v_count;
END;
$$;
REVOKE ALL ON FUNCTION auth._revoke_family(bytea, text, text) FROM public;
