-- depends: 0015.compact-spent-tokens
-- quiet_until: until when a call answers "valid, nothing to do" from the row alone, with
-- no use to record, no refresh due and no successor to hand out. The validators' one
-- statement for the common case then checks one time and the scope instead of seven
-- conditions: each condition is an expression PostgreSQL sets up anew in every call
-- (every call is its own transaction), and the seven cost validate-and-refresh about 7%
-- of the PL/pgSQL floor (callgrind, instructions per call, 2026-12-02).
-- -infinity when the answer needs more than the row: revoked, a successor kept to hand
-- out, a successor's first use not yet recorded (it starts its predecessor's grace), or
-- a family at its maximum lifetime (its own answer, MAX_LIFETIME_REACHED).
-- A stored generated column, so that no writer of the bridge can forget it; 8 bytes a
-- row. Adding it rewrites the bridge and its indexes once, under an ACCESS EXCLUSIVE
-- lock that blocks validation meanwhile (not timed here at scale): migrate in a quiet
-- moment.

ALTER TABLE auth.api_token_bridge
ADD COLUMN quiet_until timestamptz NOT NULL GENERATED ALWAYS AS (
    CASE
        WHEN
            is_revoked OR successor_secret IS NOT NULL
            OR (last_used_at IS NULL AND predecessor_hk IS NOT NULL)
            OR refresh_after = 'infinity'::timestamptz
            THEN '-infinity'::timestamptz
        ELSE least(valid_until, refresh_after, record_use_after)
    END
) STORED;
COMMENT ON COLUMN auth.api_token_bridge.quiet_until IS
'Until when a validation answers valid with nothing to record, refresh or hand out: '
'least(valid_until, refresh_after, record_use_after), or -infinity when revoked, a '
'successor is kept, a first use is pending or the family is at its maximum lifetime.';

-- Replaced by auth._is_quiet (sql/ is applied right after the migrations).
DROP FUNCTION IF EXISTS auth._valid_as_is(auth.api_token_bridge, text);
