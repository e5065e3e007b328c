"""Bulk-load the benchmark's tokens with set-based SQL, prewarm, and check them.

Tokens go straight into the vault and the bridge with the columns and hash rules of
auth._issue_token, auth.register_tenant and auth.register_user. The plaintext tokens are
made once, here, and kept in bench.token (i bigint PRIMARY KEY, token text), which every
pgbench script reads by i.
"""

from __future__ import annotations

import os
import sys
from concurrent.futures import ThreadPoolExecutor

import psycopg

from bench.common import BENCH_DIR, RECORD_SOURCE, log, step
from bench.plan import Plan


def bench_token(conn: psycopg.Connection, i: int) -> str:
    """Token i of the benchmark data, from bench.token as the pgbench scripts read it."""
    return conn.execute("SELECT token FROM bench.token WHERE i = %s", (i,)).fetchone()[0]


LOAD_TENANTS = """
INSERT INTO auth.tenant_h (tenant_hk, tenant_bk, load_date, record_source)
SELECT sha256(convert_to('tenant:' || s.bk, 'UTF8')), s.bk, now() - interval '400 days',
       %(source)s
FROM (SELECT 'bench-tenant-' || t AS bk FROM generate_series(0, %(tenants)s - 1) AS t) AS s
"""

LOAD_USERS = """
CREATE UNLOGGED TABLE bench.load_user AS
SELECT u.n, t.tenant_hk, 'bench-user-' || u.n AS user_bk,
       sha256(t.tenant_hk || convert_to('user:bench-user-' || u.n, 'UTF8')) AS user_hk
FROM generate_series(0, %(users)s - 1) AS u (n)
INNER JOIN auth.tenant_h AS t ON t.tenant_bk = 'bench-tenant-' || mod(u.n, %(tenants)s)
"""

LOAD_USER_HUB = """
INSERT INTO auth.user_h (user_hk, user_bk, tenant_hk, load_date, record_source)
SELECT user_hk, user_bk, tenant_hk, now() - interval '400 days', %(source)s
FROM bench.load_user
"""

LOAD_TOKEN_TABLE = """
CREATE UNLOGGED TABLE bench.load_token (
    i bigint NOT NULL,
    kind text NOT NULL,
    token text NOT NULL,
    token_hash bytea NOT NULL,
    api_token_hk bytea NOT NULL,
    api_token_bk text NOT NULL,
    user_hk bytea NOT NULL,
    tenant_hk bytea NOT NULL,
    token_type text NOT NULL,
    scope text[] NOT NULL,
    issued_at timestamptz NOT NULL,
    expires_at timestamptz NOT NULL,
    refresh_after timestamptz NOT NULL,
    record_use_after timestamptz NOT NULL
)
"""

# One range of tokens. issued_at = expires_at - the policy's time_to_live (the family
# starts then); refresh_after follows auth._refresh_after. fresh: expires in 10-30 days
# (no refresh due for 3+ days); due: expires in 2-3 days (refresh due now).
LOAD_TOKENS = """
INSERT INTO bench.load_token
SELECT g.i, %(kind)s, t.token, sha256(convert_to(t.token, 'UTF8')),
       auth._hash_key(convert_to(x.bk, 'UTF8')), x.bk,
       u.user_hk, u.tenant_hk, x.token_type, %(scope)s,
       x.expires_at - p.time_to_live, x.expires_at,
       CASE WHEN x.expires_at - p.time_to_live + p.max_lifetime <= x.expires_at
            THEN 'infinity'::timestamptz
            ELSE x.expires_at - p.refresh_threshold END,
       %(record_use_after)s::timestamptz
FROM generate_series(%(first)s::bigint, %(last)s::bigint) AS g (i)
CROSS JOIN LATERAL (
    SELECT 'ovt_prod_' || encode(sha256(convert_to('bench' || g.i, 'UTF8')), 'hex') AS token
) AS t
CROSS JOIN LATERAL (
    SELECT
        'tok_' || left(encode(sha256(convert_to('bench-bk' || g.i, 'UTF8')), 'hex'), 32) AS bk,
        CASE WHEN %(mixed)s AND mod(g.i, 2) = 0 THEN 'API_KEY' ELSE 'PRODUCTION' END
            AS token_type,
        CASE WHEN %(due)s
             THEN now() + interval '2 days' + mod(g.i, 86400) * interval '1 second'
             ELSE now() + interval '10 days' + mod(g.i, 20 * 86400) * interval '1 second'
        END AS expires_at
) AS x
INNER JOIN auth.token_refresh_policy AS p ON p.token_type = x.token_type
INNER JOIN bench.load_user AS u ON u.n = mod(g.i, %(users)s)
"""

# The same rows auth._issue_token writes: hub, user link, satellite, bridge. Token and link
# keys are auth._hash_key (16 bytes, migration 0014); tenant and user keys full sha256.
LOAD_VAULT = [
    ("auth.api_token_h", """
INSERT INTO auth.api_token_h (api_token_hk, api_token_bk, tenant_hk, load_date, record_source)
SELECT api_token_hk, api_token_bk, tenant_hk, issued_at, %(source)s FROM bench.load_token"""),
    ("auth.user_token_l", """
INSERT INTO auth.user_token_l (
    link_user_token_hk, user_hk, api_token_hk, tenant_hk, load_date, record_source
)
SELECT auth._hash_key(user_hk || api_token_hk), user_hk, api_token_hk, tenant_hk, issued_at,
       %(source)s
FROM bench.load_token"""),
    ("auth.api_token_s", """
INSERT INTO auth.api_token_s (
    api_token_hk, load_date, hash_diff, token_hash, token_type, scope, expires_at,
    record_source
)
SELECT api_token_hk, issued_at,
       auth._token_hash_diff(token_hash, token_type, scope, expires_at, FALSE, NULL),
       token_hash, token_type, scope, expires_at, %(source)s
FROM bench.load_token"""),
    ("auth.api_token_bridge", """
INSERT INTO auth.api_token_bridge (
    token_hash, api_token_hk, user_hk, tenant_hk, token_type, scope, issued_at,
    expires_at, valid_until, refresh_after, record_use_after, family_hk,
    family_started_at, generation
)
SELECT token_hash, api_token_hk, user_hk, tenant_hk, token_type, scope, issued_at,
       expires_at, expires_at, refresh_after, record_use_after, api_token_hk,
       issued_at, 0
FROM bench.load_token"""),
]

# Foreign keys are not checked during the load (session_replication_role = replica, when
# we may); these anti-joins check what they would have.
LOAD_CHECKS = [
    ("api_token_h -> tenant_h", """
SELECT count(*) FROM auth.api_token_h AS h
WHERE NOT EXISTS (SELECT FROM auth.tenant_h AS t WHERE t.tenant_hk = h.tenant_hk)"""),
    ("user_token_l -> user_h, api_token_h", """
SELECT count(*) FROM auth.user_token_l AS l
WHERE NOT EXISTS (SELECT FROM auth.user_h AS u WHERE u.user_hk = l.user_hk)
   OR NOT EXISTS (SELECT FROM auth.api_token_h AS h WHERE h.api_token_hk = l.api_token_hk)"""),
    ("api_token_s -> api_token_h", """
SELECT count(*) FROM auth.api_token_s AS s
WHERE NOT EXISTS (SELECT FROM auth.api_token_h AS h WHERE h.api_token_hk = s.api_token_hk)"""),
    ("api_token_bridge -> api_token_h, user_h", """
SELECT count(*) FROM auth.api_token_bridge AS b
WHERE NOT EXISTS (SELECT FROM auth.api_token_h AS h WHERE h.api_token_hk = b.api_token_hk)
   OR NOT EXISTS (SELECT FROM auth.user_h AS u WHERE u.user_hk = b.user_hk)"""),
]


def check_empty(conn: psycopg.Connection) -> None:
    if conn.execute("SELECT to_regnamespace('bench') IS NOT NULL").fetchone()[0]:
        sys.exit("error: this database has a bench schema already; point --database at a "
                 "fresh database (the benchmark loads tokens and writes to it)")
    if conn.execute("SELECT EXISTS (SELECT FROM auth.api_token_h)").fetchone()[0]:
        sys.exit("error: this database has tokens already; point --database at a fresh "
                 "database (the benchmark loads its own tokens)")


def load_workers() -> int:
    return max(2, min(4, len(os.sched_getaffinity(0))))


def parallel(url: str, jobs: list[tuple[str, list[tuple[str, dict]]]], *,
             replica: bool) -> list:
    """Run independent lists of statements, each on its own connection, a few at a time.

    Returns the first column of each list's last statement when it returns rows.
    """

    def work(job):
        _name, statements = job
        with psycopg.connect(url, autocommit=True) as c:
            if replica:
                c.execute("SET session_replication_role = replica")
            c.execute("SET synchronous_commit = off")
            cur = None
            for sql, params in statements:
                cur = c.execute(sql, params)
            return cur.fetchone()[0] if cur is not None and cur.description else None

    with ThreadPoolExecutor(max_workers=load_workers()) as pool:
        return list(pool.map(work, jobs))


def load(conn: psycopg.Connection, url: str, plan: Plan) -> dict:
    """Bulk-load tenants, users and every token range; VACUUM ANALYZE."""
    info: dict = {"foreign_keys_checked_during_load": True, "workers": load_workers()}
    ranges = plan.ranges
    params = {"source": RECORD_SOURCE, "tenants": plan.tenants, "users": plan.users}
    with step("bench schema (the peer and the PL/pgSQL floor)"):
        for name in ("peer.sql", "plpgsql_floor.sql"):
            conn.execute((BENCH_DIR / "sql" / name).read_text(encoding="utf-8"))
        conn.execute("CREATE TABLE bench.token_range (kind text PRIMARY KEY, "
                     "first_i bigint NOT NULL, last_i bigint NOT NULL)")
        for kind, (first, last) in ranges.items():
            conn.execute("INSERT INTO bench.token_range VALUES (%s, %s, %s)", (kind, first, last))
    replica = bool(conn.execute("SELECT rolsuper FROM pg_roles "
                                "WHERE rolname = current_user").fetchone()[0])
    if replica:
        info["foreign_keys_checked_during_load"] = False
    else:
        log.print("  (not superuser: foreign keys are checked row by row during the load)")
    with step(f"{plan.tenants} tenants, {plan.users} users"):
        conn.execute(LOAD_TENANTS, params)
        conn.execute(LOAD_USERS, params)
        conn.execute("ALTER TABLE bench.load_user ADD PRIMARY KEY (n)")
        conn.execute(LOAD_USER_HUB, params)
    conn.execute(LOAD_TOKEN_TABLE)
    specs = {
        "read": {"due": False, "mixed": False, "record_use_after": "infinity"},
        "hot": {"due": False, "mixed": False, "record_use_after": "-infinity"},
        "rotate": {"due": True, "mixed": False, "record_use_after": "-infinity"},
        "due": {"due": True, "mixed": True, "record_use_after": "-infinity"},
    }
    total = sum(last - first + 1 for first, last in ranges.values())
    # Split every range into one slice per worker.
    workers = load_workers()
    derive: list[tuple[str, list]] = [(f"derive {w}", []) for w in range(workers)]
    for kind, (first, last) in ranges.items():
        step_size = -(-(last - first + 1) // workers)
        for w, lo in enumerate(range(first, last + 1, step_size)):
            derive[w][1].append((LOAD_TOKENS, {
                **params, **specs[kind], "kind": kind, "first": lo,
                "last": min(last, lo + step_size - 1), "scope": ["api:read", "api:write"]}))
    with step(f"derive {total:,} tokens (read {plan.n_read:,}, hot {plan.n_hot:,}, "
              f"rotate {ranges['rotate'][1] - ranges['rotate'][0] + 1:,}, "
              f"due {ranges['due'][1] - ranges['due'][0] + 1:,}) "
              f"with {workers} workers"):
        parallel(url, derive, replica=replica)
    # Biggest first, so the workers finish together.
    extra = ("bench.token, bench.hot_token, bench.peer_token", [
        # The pre-made plaintext tokens the pgbench scripts read by i (the due range is
        # only for the batch job, which needs no plaintext).
        ("CREATE TABLE bench.token AS SELECT i, token FROM bench.load_token "
         "WHERE kind <> 'due'", {}),
        ("ALTER TABLE bench.token ADD PRIMARY KEY (i)", {}),
        ("CREATE TABLE bench.hot_token AS SELECT token_hash FROM bench.load_token "
         "WHERE kind = 'hot'", {}),
        ("ALTER TABLE bench.hot_token ADD PRIMARY KEY (token_hash)", {}),
        ("INSERT INTO bench.peer_token (token_hash, api_token_hk, user_hk, tenant_hk, scope, "
         "expires_at) SELECT token_hash, api_token_hk, user_hk, tenant_hk, scope, expires_at "
         "FROM bench.load_token WHERE kind = 'read'", {}),
    ])
    vault = [(table, [(sql, params)]) for table, sql in LOAD_VAULT]
    order = ["auth.api_token_s", "auth.api_token_bridge", "auth.user_token_l",
             "auth.api_token_h"]
    vault.sort(key=lambda job: order.index(job[0]))
    with step("insert " + ", ".join(name for name, _ in vault) + " and the peer's tables"):
        parallel(url, [*vault, extra], replica=replica)
    conn.execute("DROP TABLE bench.load_token, bench.load_user")
    with step("check foreign keys"):
        bad = parallel(url, [(name, [(sql, {})]) for name, sql in LOAD_CHECKS], replica=False)
        for (name, _), count in zip(LOAD_CHECKS, bad, strict=True):
            if count:
                raise RuntimeError(f"bulk load broke {name}: {count} rows")
    with step("VACUUM ANALYZE"):
        conn.execute("VACUUM ANALYZE")
    info["tokens"] = total
    info["ranges"] = {k: list(v) for k, v in ranges.items()}
    return info


def prewarm(conn: psycopg.Connection) -> bool:
    """Read the hot tables and indexes into shared_buffers, when pg_prewarm is there."""
    try:
        conn.execute("CREATE EXTENSION IF NOT EXISTS pg_prewarm WITH SCHEMA bench")
    except psycopg.Error:
        return False
    conn.execute("""
        SELECT bench.pg_prewarm(c.oid)
        FROM pg_class AS c INNER JOIN pg_namespace AS n ON n.oid = c.relnamespace
        WHERE n.nspname IN ('auth', 'bench') AND c.relkind IN ('r', 'i')""")
    return True


def sanity_check(conn: psycopg.Connection, plan: Plan) -> None:
    """The loaded tokens answer as the benchmark expects, before anything is timed."""
    ranges = plan.ranges
    for kind in ("read", "hot"):
        first, last = ranges[kind]
        for i in (first, (first + last) // 2, last):
            with conn.transaction():
                row = conn.execute(
                    "SELECT is_valid, refresh_reason, message "
                    "FROM auth.validate_and_refresh_api_token(%s)",
                    (bench_token(conn, i),)).fetchone()
                if row[0] is not True or row[1] != "NO_REFRESH_NEEDED":
                    raise RuntimeError(f"{kind} token {i}: validate_and_refresh gave {row}")
                # The peer's table and the floor hold the read range only.
                fns = ["auth.validate_production_api_token"]
                if kind == "read":
                    fns += ["bench.validate_seed_shape", "bench.validate_floor",
                            "bench.validate_and_refresh_floor"]
                for fn in fns:
                    ok = conn.execute(f"SELECT is_valid, message FROM {fn}(%s)",  # noqa: S608
                                      (bench_token(conn, i),)).fetchone()
                    if ok[0] is not True:
                        raise RuntimeError(f"{kind} token {i}: {fn} gave {ok}")
                raise psycopg.Rollback()
    first, last = ranges["rotate"]
    row = conn.execute("SELECT refresh_after <= now(), successor_hk IS NULL "
                       "FROM auth.api_token_bridge WHERE token_hash = "
                       "sha256(convert_to(%s, 'UTF8'))", (bench_token(conn, last),)).fetchone()
    if row != (True, True):
        raise RuntimeError(f"rotate token {last} is not due for refresh: {row}")
