"""Fuzzing every public function's arguments with hypothesis, on one reused connection.

Inputs: NULL, empty, any text, unicode, huge (up to 1 MB), SQL metacharacters, near-valid
tokens (the right prefix and 64 characters of mixed case or non-hex; 72 characters whose
UTF-8 is 73 bytes), real tokens padded, cut, re-cased or with one character changed, and
the real tokens themselves in every state (fresh, due, rotated, reused, revoked, expired,
at the family's maximum lifetime); any int32 for thresholds and sizes; NULL or a boolean
for flags; any text for p_trigger and for reasons.

Every call runs in a transaction of its own. The checks:
- no exception at all, except the documented SQLSTATEs of the functions that raise on bad
  arguments (22023 invalid_parameter_value, 23503 foreign_key_violation);
- answers have the documented shape and reason codes;
- invalid input writes nothing: no transaction id was assigned by the call
  (``pg_current_xact_id_if_assigned()`` is NULL: not even a row lock was taken) and the
  row counts, and in the QUICK profile the ``tests.snapshot()`` digest, are unchanged.
  The batch records a run row by design, so a dry run may add exactly that row; a real
  run may refresh due tokens, after which every token must still be consistent.

QUICK profile: 300 examples per function; ``PYVAULT_SOAK=1``: 10,000.
"""

from __future__ import annotations

import json
import re
from datetime import timedelta

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from psycopg.rows import dict_row

from tests.profile import SOAK, profile
from tests.tokens import make_token

FUZZ = settings(
    max_examples=profile(300, 10_000),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                           HealthCheck.data_too_large],
)

REASONS = frozenset({
    "NO_REFRESH_NEEDED", "EXPIRING_SOON", "FORCED", "EXPIRY_EXTENDED", "ALREADY_REFRESHED",
    "PREDICTED_IDLE", "REFRESH_DEFERRED_READ_ONLY", "REFRESH_FAILED", "MAX_LIFETIME_REACHED",
    "TOKEN_INVALID", "INSUFFICIENT_SCOPE", "REUSE_DETECTED", "INVALID_ARGUMENT",
    "FORCE_RATE_LIMITED", "REFRESH_BUSY", "REFRESH_DEFERRED_SNAPSHOT",
})
TOKEN_RE = re.compile(r"\Aovt_prod_[0-9a-f]{64}\Z")  # \Z: "$" would allow a final newline
INT32 = (-(2**31), 2**31 - 1)

# Filled by the module fixture before any example is drawn; strategies index into them.
REAL: list[str] = []
HASH_KEYS: list[bytes] = []


# -- strategies ---------------------------------------------------------------------------

_chars = st.characters(exclude_characters="\x00", exclude_categories=("Cs",))
any_text = st.text(_chars, max_size=300)
unicode_text = st.text(st.characters(min_codepoint=0x80, exclude_categories=("Cs",)),
                       min_size=1, max_size=80)
huge = st.sampled_from([10_000, 100_000, 1_000_000]).flatmap(
    lambda n: st.sampled_from(["ovt_prod_" + "a" * n, "x" * n, "'" * n, "é" * n,
                               ("ovt_prod_" + "0" * 64 + " ") * (n // 74)]))
META = ["'", "''", "\\", "\\'", "';--", "' OR '1'='1", "' OR 1=1 --", "$$", "$1", "%s",
        "%(t)s", '"', "--", "/*", "*/", ";", "); DROP TABLE auth.api_token_bridge; --",
        "E'\\\\'", "ovt_prod_' || 'a", "\u2028", "\r\n", "\\x00", "%", "_", "*", "NULL"]
sql_meta = st.lists(st.sampled_from(META) | any_text, min_size=1, max_size=5).map("".join)
HEX = "0123456789abcdef"
NEAR = list(HEX + "ABCDEFghxyz-_ .é∂\u00a0\t\n")
near_valid = st.text(st.sampled_from(NEAR), min_size=64, max_size=64).map(
    lambda s: "ovt_prod_" + s)
unknown_token = st.text(st.sampled_from(list(HEX)), min_size=64, max_size=64).map(
    lambda s: "ovt_prod_" + s)
# 72 characters, 73 bytes: passes the SQL length-and-prefix check, then matches nothing.
octets_73 = st.text(st.sampled_from(list(HEX)), min_size=62, max_size=62).map(
    lambda s: "ovt_prod_" + s + "é")
wrong_prefix = st.tuples(
    st.sampled_from(["OVT_PROD_", "ovt_prod", "ovt-prod_", "ovt_dev__", " ovt_prod_",
                     "ovt_prod__", "Ovt_prod_", "ovt_prod\u00a0"]),
    st.text(st.sampled_from(list(HEX)), min_size=64, max_size=64)).map("".join)
real_token = st.integers(0, 10**6).map(lambda i: REAL[i % len(REAL)])

MUTATIONS = ("pad_left", "pad_right", "pad_both", "upper", "drop_last", "drop_first_hex",
             "append", "replace", "swapcase_one", "bearer", "twice", "nfd_accent")


def _mutate(args: tuple[str, str, int, str, str]) -> str:
    token, how, pos, ch, pad = args
    pos = 9 + pos % 64
    out = {
        "pad_left": pad + token,
        "pad_right": token + pad,
        "pad_both": pad + token + pad,
        "upper": token.upper(),
        "drop_last": token[:-1],
        "drop_first_hex": token[:9] + token[10:],
        "append": token + ch,
        "replace": token[:pos] + ch + token[pos + 1:],
        "swapcase_one": token[:pos] + token[pos].swapcase() + token[pos + 1:],
        "bearer": "Bearer " + token,
        "twice": token + token,
        "nfd_accent": token[:-1] + "e\u0301",
    }[how]
    return out if out != token else token + "x"


mutated_real = st.tuples(real_token, st.sampled_from(MUTATIONS), st.integers(0, 63),
                         st.sampled_from(NEAR), st.sampled_from([" ", "\t", "\n", "\r\n",
                                                                 "\u00a0", "\u200b", "  "])
                         ).map(_mutate)

tokens = st.one_of(st.none(), st.just(""), any_text, unicode_text, huge, sql_meta, near_valid,
                   unknown_token, octets_73, wrong_prefix, mutated_real, real_token)
scopes = st.one_of(st.none(), st.sampled_from(["api:read", "api:write", "", "API:READ",
                                               " api:read", "api:read ", "*", "%", "api:%",
                                               "{api:read}", "api:read,api:write"]),
                   any_text, huge)
int32s = st.one_of(st.none(), st.integers(*INT32),
                   st.sampled_from([-1, 0, 1, 7, 3650, 3651, 100_000, 100_001, *INT32]))
flags = st.one_of(st.none(), st.booleans())
triggers = st.one_of(st.none(), st.sampled_from(["SERVICE", "service", "ON_DEMAND", "FORCED",
                                                 "BATCH", "DIAGNOSTIC", "", " SERVICE"]),
                     any_text)


# -- running one call ---------------------------------------------------------------------

class Outcome:
    def __init__(self, rows, sqlstate, wrote, counts_before, counts_after, snap_before,
                 snap_after):
        self.rows = rows
        self.sqlstate = sqlstate
        self.wrote = wrote
        self.counts_before, self.counts_after = counts_before, counts_after
        self.snap_before, self.snap_after = snap_before, snap_after

    def assert_nothing_written(self, what: str, *, rolled_back_writes: bool = False) -> None:
        """rolled_back_writes: the call may write in a subtransaction it rolls back (which
        leaves a transaction id assigned); then only the data decides."""
        if not rolled_back_writes:
            assert not self.wrote, f"{what}: the call took a transaction id (it wrote or locked)"
        assert self.counts_after == self.counts_before, f"{what}: rows were added or removed"
        assert self.snap_after == self.snap_before, f"{what}: row contents changed"


def _state(conn: psycopg.Connection) -> tuple[dict, str | None]:
    counts = conn.execute("SELECT tests.row_counts()").fetchone()["row_counts"]
    snap = None if SOAK else conn.execute("SELECT tests.snapshot()").fetchone()["snapshot"]
    return counts, snap


def run(conn: psycopg.Connection, sql: str, params: dict) -> Outcome:
    """One call in a transaction of its own; an exception becomes its SQLSTATE."""
    counts_before, snap_before = _state(conn)
    rows, sqlstate, wrote = None, None, None
    try:
        with conn.transaction():
            rows = conn.execute(sql, params).fetchall()
            wrote = conn.execute("SELECT pg_current_xact_id_if_assigned() AS x"
                                 ).fetchone()["x"] is not None
    except psycopg.Error as exc:
        if exc.sqlstate is None:  # a client-side error is the test's own fault
            raise
        sqlstate = exc.sqlstate
    counts_after, snap_after = _state(conn)
    return Outcome(rows, sqlstate, wrote, counts_before, counts_after, snap_before, snap_after)


def is_real(token) -> bool:
    return token in REAL


def assert_no_secret_echoed(token, rows) -> None:
    """A token-shaped input never comes back whole: at most 13 characters of it."""
    if not isinstance(token, str) or len(token) < 73 or not token.startswith("ovt_prod_"):
        return
    text = json.dumps(rows, default=str, ensure_ascii=False)
    assert token[:14] not in text and token[9:73] not in text


# -- fixtures -----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def fz(db_url):
    """One connection for every example of the module, and a pool of real tokens in every
    state a token can be in."""
    with psycopg.connect(db_url, autocommit=True, row_factory=dict_row) as conn:
        conn.execute("SET statement_timeout = '120s'")  # a hang fails instead of stalling
        with psycopg.connect(db_url, autocommit=True) as setup:
            made = []
            for expires_in, token_type, scope in (
                    ("30 days", "PRODUCTION", "{api:read}"), ("30 days", "PRODUCTION",
                                                              "{api:read,api:write}"),
                    ("3 days", "PRODUCTION", "{api:read}"), ("3 days", "API_KEY", "{api:read}"),
                    ("30 days", "API_KEY", "{api:write}"), ("30 days", "API", "{api:read}"),
                    ("3 days", "API", "{api:read}"), ("365 days", "PRODUCTION", "{api:read}")):
                made.append(make_token(setup, expires_in, token_type, scope, user="fuzz"))
            rotated = make_token(setup, "3 days", user="fuzz")
            made += [rotated, setup.execute(
                "SELECT new_token FROM auth.validate_and_refresh_api_token(%s)",
                (rotated,)).fetchone()[0]]
            revoked = make_token(setup, "30 days", user="fuzz")
            setup.execute("SELECT auth.revoke_api_token(%s)", (revoked,))
            made.append(revoked)
            expired = make_token(setup, "1 second", user="fuzz")
            # Reused: rotated, its successor used, and its grace window (1 s here) over.
            setup.execute("SELECT auth.set_refresh_policy('API', p_grace_period => '1 second')")
            reused = make_token(setup, "3 days", "API", user="fuzz")
            successor = setup.execute(
                "SELECT new_token FROM auth.validate_and_refresh_api_token(%s)",
                (reused,)).fetchone()[0]
            setup.execute("SELECT * FROM auth.validate_production_api_token(%s)", (successor,))
            # The test clock: 'expired' past its second, 'reused' past its grace.
            setup.execute("SELECT tests.advance_clock('2 seconds')")
            made += [expired, reused, successor]
            assert all(TOKEN_RE.match(t) for t in made)
            REAL[:] = made
            tenant = setup.execute("SELECT auth.register_tenant('fuzz-other')").fetchone()[0]
            HASH_KEYS[:] = [*setup.execute(
                "SELECT user_hk, tenant_hk FROM auth.user_h WHERE user_bk = 'fuzz'"
            ).fetchone(), tenant, setup.execute(
                "SELECT auth.register_user(%s, 'fuzz-other-user')", (tenant,)).fetchone()[0]]
        yield conn
        assert conn.execute("SELECT tests.inconsistent_tokens() AS n").fetchone()["n"] == 0


# -- validation ---------------------------------------------------------------------------

def _check_validation(out: Outcome, token, scope, with_refresh: bool) -> None:
    assert out.sqlstate is None, f"raised {out.sqlstate}"
    assert len(out.rows) == 1
    row = out.rows[0]
    assert isinstance(row["is_valid"], bool) and row["message"]
    if with_refresh:
        assert row["refresh_reason"] in REASONS and isinstance(row["was_refreshed"], bool)
        assert row["new_token"] is None or TOKEN_RE.match(row["new_token"])
    if row["is_valid"]:
        assert is_real(token) and scope in row["scope"]
        assert row["user_hk"] and row["tenant_hk"] and row["expires_at"]
    else:
        assert row["user_hk"] is None and row["scope"] is None
        if with_refresh:
            assert row["new_token"] is None and not row["was_refreshed"]
    if not is_real(token) or scope is None:
        out.assert_nothing_written(f"token={token!r:.80} scope={scope!r:.40}")
    assert_no_secret_echoed(token, [{k: v for k, v in row.items() if k != "new_token"}])


@FUZZ
@given(token=tokens, scope=scopes)
def test_validate_production_api_token(fz, token, scope):
    out = run(fz, "SELECT * FROM auth.validate_production_api_token("
                  "p_token => %(t)s::text, p_required_scope => %(s)s::text)",
              {"t": token, "s": scope})
    _check_validation(out, token, scope, with_refresh=False)


@FUZZ
@given(token=tokens, scope=scopes)
def test_validate_and_refresh_api_token(fz, token, scope):
    out = run(fz, "SELECT * FROM auth.validate_and_refresh_api_token("
                  "p_token => %(t)s::text, p_required_scope => %(s)s::text)",
              {"t": token, "s": scope})
    _check_validation(out, token, scope, with_refresh=True)


@FUZZ
@given(token=tokens)
def test_get_token_refresh_status_never_writes(fz, token):
    out = run(fz, "SELECT * FROM auth.get_token_refresh_status(p_token => %(t)s::text)",
              {"t": token})
    assert out.sqlstate is None, f"raised {out.sqlstate}"
    assert len(out.rows) == 1
    row = out.rows[0]
    assert isinstance(row["is_valid"], bool) and isinstance(row["refresh_recommended"], bool)
    assert row["refresh_reason"] in REASONS and row["message"] and row["recommendation_reason"]
    assert not row["is_valid"] or is_real(token)
    out.assert_nothing_written(f"status of {token!r:.80}")  # for every input, real or not
    assert_no_secret_echoed(token, out.rows)


# -- refresh ------------------------------------------------------------------------------

@FUZZ
@given(token=tokens, threshold=int32s, force=flags, trigger=triggers)
def test_refresh_production_token_enhanced(fz, token, threshold, force, trigger):
    out = run(fz, "SELECT * FROM auth.refresh_production_token_enhanced(p_token => %(t)s::text,"
                  " p_threshold_days => %(d)s::integer, p_force => %(f)s::boolean,"
                  " p_trigger => %(g)s::text)",
              {"t": token, "d": threshold, "f": force, "g": trigger})
    assert out.sqlstate is None, f"raised {out.sqlstate}"
    assert len(out.rows) == 1
    row = out.rows[0]
    assert isinstance(row["success"], bool) and row["message"]
    assert row["refresh_reason"] in REASONS
    assert row["new_token"] is None or (row["success"] and TOKEN_RE.match(row["new_token"]))
    bad_argument = ((threshold is not None and not 0 <= threshold <= 3650)
                    or trigger not in (None, "SERVICE"))
    if bad_argument and is_real(token):
        assert row["refresh_reason"] == "INVALID_ARGUMENT" and not row["success"]
    if not is_real(token) or bad_argument:
        assert not row["success"]
        out.assert_nothing_written(f"refresh of {token!r:.80} ({threshold}, {trigger!r:.40})")
    assert_no_secret_echoed(token, [{k: v for k, v in row.items() if k != "new_token"}])


# -- diagnostics --------------------------------------------------------------------------

@FUZZ
@given(token=tokens, apply=flags)
def test_test_token_refresh_system(fz, token, apply):
    out = run(fz, "SELECT * FROM auth.test_token_refresh_system(p_token => %(t)s::text,"
                  " p_apply => %(a)s::boolean)", {"t": token, "a": apply})
    assert out.sqlstate is None, f"raised {out.sqlstate}"
    assert out.rows and out.rows[0]["step"] == "FORMAT"
    for row in out.rows:
        assert re.match(r"^(OK|WARN: |FAIL: )", row["result"]), row
        assert isinstance(row["details"], dict)
    format_ok = isinstance(token, str) and bool(TOKEN_RE.match(token))
    assert out.rows[0]["result"] == ("OK" if format_ok else
                                     "FAIL: not ovt_prod_ followed by 64 lower-case hex")
    if format_ok and not is_real(token):
        assert [r["step"] for r in out.rows] == ["FORMAT", "LOOKUP"]
    if format_ok:
        assert out.rows[0]["details"]["token_prefix"] == token[:13] + "…"
    else:
        # Nothing of a non-token comes back: a fixed placeholder, its length, two booleans.
        assert len(out.rows) == 1
        details = out.rows[0]["details"]
        assert details["token_prefix"] == "(not a token)…"
        assert set(details) == {"token_prefix", "length", "prefix_ok", "lowercase_hex_ok"}
        assert details["length"] == (len(token) if isinstance(token, str) else None)
    if apply is not True or not is_real(token):
        # A dry run writes nothing, even for a real token (the refresh is rolled back).
        out.assert_nothing_written(f"diagnostics of {token!r:.80} (apply={apply})",
                                   rolled_back_writes=is_real(token))
    assert_no_secret_echoed(token, out.rows)


# -- revocation ---------------------------------------------------------------------------

@FUZZ
@given(token=tokens, reason=st.one_of(st.none(), any_text, huge, sql_meta))
def test_revoke_api_token(fz, token, reason):
    out = run(fz, "SELECT auth.revoke_api_token(p_token => %(t)s::text,"
                  " p_reason => %(r)s::text) AS revoked", {"t": token, "r": reason})
    assert out.sqlstate is None, f"raised {out.sqlstate}"
    assert len(out.rows) == 1 and isinstance(out.rows[0]["revoked"], bool)
    if not is_real(token):
        assert out.rows[0]["revoked"] is False
        out.assert_nothing_written(f"revoke of {token!r:.80}")
    else:
        assert fz.execute("SELECT * FROM auth.validate_production_api_token(%s)",
                          (token,)).fetchone()["is_valid"] is False


# -- batch --------------------------------------------------------------------------------

@FUZZ
@given(threshold=int32s, batch_size=int32s, max_tokens=int32s, dry_run=flags)
def test_refresh_expiring_tokens_batch(fz, threshold, batch_size, max_tokens, dry_run):
    invalid = (batch_size is None or not 1 <= batch_size <= 100_000
               or (max_tokens is not None and max_tokens < 0)
               or (threshold is not None and not 0 <= threshold <= 3650))
    out = run(fz, "SELECT * FROM auth.refresh_expiring_tokens_batch("
                  "p_threshold_days => %(d)s::integer, p_batch_size => %(b)s::integer,"
                  " p_max_tokens => %(m)s::integer, p_dry_run => %(r)s::boolean)",
              {"d": threshold, "b": batch_size, "m": max_tokens, "r": dry_run})
    if invalid:
        assert out.sqlstate == "22023", f"expected invalid_parameter_value, got {out.sqlstate}"
        out.assert_nothing_written(f"batch({threshold}, {batch_size}, {max_tokens})")
        return
    assert out.sqlstate is None, f"raised {out.sqlstate}"
    row = out.rows[0]
    counts = row["details"]["counts"]
    assert row["tokens_found"] == counts["extended"] + counts["enqueued"] + counts["failed"]
    # Failures are tokens at their family's cap (other examples change the policies).
    assert row["tokens_failed"] == counts["failed"]
    assert max_tokens is None or row["tokens_found"] <= max_tokens
    assert "token_hash" not in json.dumps(row["details"])
    added = {k: out.counts_after[k] - out.counts_before[k] for k in out.counts_after}
    if dry_run:
        # The dry run is the real run rolled back: it reports the batches it would take.
        assert row["tokens_refreshed"] == 0
        assert {k: v for k, v in added.items() if v} == {"token_refresh_batch_run": 1}
        if out.snap_before is not None:
            def strip(snap: str) -> list[str]:
                return [p for p in snap.split() if not p.startswith("token_refresh_batch_run:")]
            assert strip(out.snap_after) == strip(out.snap_before), "a dry run changed rows"
    else:
        assert added["token_refresh_batch_run"] == 1
        assert fz.execute("SELECT tests.inconsistent_tokens() AS n").fetchone()["n"] == 0


# -- issuing ------------------------------------------------------------------------------

hash_keys = st.one_of(st.none(), st.binary(max_size=64),
                      st.integers(0, 3).map(lambda i: HASH_KEYS[i]))
scope_arrays = st.one_of(st.none(), st.lists(st.one_of(
    st.none(), st.sampled_from(["api:read", "api:write", "admin", "a", "A", "api read", "",
                                "x" * 64, "x" * 65, "api:read;drop", "é"]), any_text),
    max_size=5))
token_types = st.one_of(st.none(), st.sampled_from(["API", "PRODUCTION", "API_KEY", "api",
                                                    "Production", "", " API", "EXTEND"]),
                        any_text)
EXACT_LIFETIME = timedelta(days=365)
expiries = st.one_of(
    st.none(),
    st.timedeltas(min_value=timedelta(days=-10**5), max_value=timedelta(days=10**5)),
    st.timedeltas(min_value=timedelta(0), max_value=EXACT_LIFETIME + timedelta(seconds=1)),
    st.sampled_from(["1 year", "-1 mon", "1 mon -31 days", "0", "1 microsecond",
                     "365 days", "365 days 00:00:00.000001", "178000000 years", "-178000000 years",
                     "11 months 30 days"]),
)


@FUZZ
@given(user_hk=hash_keys, tenant_hk=hash_keys, scope=scope_arrays, token_type=token_types,
       expires_in=expiries)
def test_generate_production_api_token(fz, user_hk, tenant_hk, scope, token_type, expires_in):
    out = run(fz, "SELECT * FROM auth.generate_production_api_token("
                  "p_user_hk => %(u)s::bytea, p_tenant_hk => %(t)s::bytea,"
                  " p_scope => %(s)s::text[], p_token_type => %(y)s::text,"
                  " p_expires_in => %(e)s::interval)",
              {"u": user_hk, "t": tenant_hk, "s": scope, "y": token_type, "e": expires_in})
    if out.sqlstate is not None:
        assert out.sqlstate in ("22023", "23503"), f"undocumented SQLSTATE {out.sqlstate}"
        out.assert_nothing_written("a refused generate")
        return
    row = out.rows[0]
    assert TOKEN_RE.match(row["token"]) and len(row["api_token_hk"]) == 16
    assert token_type in ("API", "PRODUCTION", "API_KEY") and scope
    assert (user_hk, tenant_hk) in ((HASH_KEYS[0], HASH_KEYS[1]), (HASH_KEYS[3], HASH_KEYS[2]))
    if isinstance(expires_in, timedelta):
        assert timedelta(0) < expires_in <= EXACT_LIFETIME
        lifetime = fz.execute("SELECT expires_at - issued_at AS l FROM auth.api_token_bridge"
                              " WHERE api_token_hk = %s", (row["api_token_hk"],)).fetchone()["l"]
        assert lifetime == expires_in


def test_generate_never_issues_past_the_maximum_lifetime(fz):
    user_hk, tenant_hk = HASH_KEYS[0], HASH_KEYS[1]
    out = run(fz, "SELECT * FROM auth.generate_production_api_token(%(u)s, %(t)s,"
                  " '{api:read}', 'PRODUCTION', '12 months 5 days')",
              {"u": user_hk, "t": tenant_hk})
    if out.sqlstate is None:
        lifetime = fz.execute(
            "SELECT b.expires_at - b.family_started_at <= p.max_lifetime AS ok"
            " FROM auth.api_token_bridge AS b JOIN auth.token_refresh_policy AS p"
            " USING (token_type) WHERE b.api_token_hk = %s",
            (out.rows[0]["api_token_hk"],)).fetchone()["ok"]
        assert lifetime, "issued with an expiry past the family's maximum lifetime"
    else:
        assert out.sqlstate == "22023"


def test_batch_with_a_threshold_visits_each_token_once(fz):
    token = fz.execute("SELECT tests.make_token('30 days', 'API_KEY', p_user => 'fuzz-t') AS t"
                       ).fetchone()["t"]
    due = fz.execute("SELECT tokens_found AS n FROM auth.refresh_expiring_tokens_batch("
                     "p_threshold_days => 100, p_dry_run => true)").fetchone()["n"]
    row = fz.execute("SELECT * FROM auth.refresh_expiring_tokens_batch("
                     "p_threshold_days => 100, p_max_tokens => %s)", (due + 50,)).fetchone()
    assert (row["tokens_found"], row["tokens_failed"]) == (due, 0), row["details"]["counts"]
    status = fz.execute("SELECT * FROM auth.get_token_refresh_status(%s)", (token,)).fetchone()
    assert status["refresh_reason"] != "MAX_LIFETIME_REACHED", "275 days from its cap"
    assert status["refresh_after"] is not None, "an extended token keeps a refresh point"


def test_batch_with_a_threshold_terminates_near_the_family_cap(fz):
    token = fz.execute("SELECT tests.make_token('3 days', 'API_KEY', p_user => 'fuzz-cap') AS t"
                       ).fetchone()["t"]
    fz.execute("UPDATE auth.api_token_bridge SET family_started_at = now() - interval '364 days'"
               " WHERE token_hash = sha256(convert_to(%s, 'UTF8'))", (token,))
    try:
        with fz.transaction():
            fz.execute("SET LOCAL statement_timeout = '2s'")
            row = fz.execute("SELECT * FROM auth.refresh_expiring_tokens_batch("
                             "p_threshold_days => 7)").fetchone()
        assert row["tokens_found"] >= 1
    finally:
        fz.execute("SELECT auth.revoke_api_token(%s)", (token,))  # out of every later run
