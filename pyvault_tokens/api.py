"""Thin Python calls of the SQL API: each SQL text once, with sync and async twins.

Every SQL text that calls an ``auth.*`` function lives here, once, as a ``*_SQL``
constant: one call per function, named arguments, explicit casts. Each has a sync
function taking a ``psycopg.Connection`` and an async twin, ``*_async``, taking a
``psycopg.AsyncConnection``; both pass the same parameters to the same text. Callers
bring the connection, so they compose their own transactions (and pools). Rows come
back as dicts, read by column name.

The ASGI middleware uses ``validate_and_refresh_async``; the refresher service and the
CLI use ``status``, ``refresh``, ``record_refresher_heartbeat``, ``schedule`` and the rest.

The monitoring views (readable by ``pyvault_monitor``) are read here too, each by one
text: ``refresh_metrics``, ``expiry_forecast``, ``tenant_usage``, ``open_alerts`` and
``last_batch_run`` serve the exporter, the alerts check and the dashboard alike.
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg.rows import dict_row

Row = dict[str, Any]
Params = dict[str, Any]

# -- the SQL texts ------------------------------------------------------------------------

REGISTER_USER_SQL = (
    "SELECT t.hk AS tenant_hk,"
    " auth.register_user(p_tenant_hk => t.hk, p_user_bk => %(user)s::text) AS user_hk"
    " FROM (SELECT auth.register_tenant(p_tenant_bk => %(tenant)s::text) AS hk) AS t"
)
ISSUE_SQL = (
    "SELECT * FROM auth.generate_production_api_token("
    "p_user_hk => %(user_hk)s::bytea, p_tenant_hk => %(tenant_hk)s::bytea,"
    " p_scope => %(scope)s::text[], p_token_type => %(token_type)s::text,"
    " p_expires_in => %(expires_in)s::interval)"
)
VALIDATE_SQL = (
    "SELECT * FROM auth.validate_production_api_token("
    "p_token => %(token)s::text, p_required_scope => %(scope)s::text)"
)
VALIDATE_AND_REFRESH_SQL = (
    "SELECT * FROM auth.validate_and_refresh_api_token("
    "p_token => %(token)s::text, p_required_scope => %(scope)s::text)"
)
REFRESH_SQL = (
    "SELECT * FROM auth.refresh_production_token_enhanced("
    "p_token => %(token)s::text, p_threshold_days => %(days)s::integer,"
    " p_force => %(force)s::boolean, p_trigger => %(trigger)s::text)"
)
STATUS_SQL = "SELECT * FROM auth.get_token_refresh_status(p_token => %(token)s::text)"
HEARTBEAT_SQL = (
    "SELECT auth.record_refresher_heartbeat(p_instance => %(instance)s::text,"
    " p_tokens => %(tokens)s::text[]) AS known"
)
REFRESH_BATCH_SQL = (
    "SELECT * FROM auth.refresh_expiring_tokens_batch("
    "p_threshold_days => %(days)s::integer, p_batch_size => %(size)s::integer,"
    " p_max_tokens => %(max)s::integer, p_dry_run => %(dry)s::boolean)"
)
PRUNE_BATCH_SQL = (
    "SELECT * FROM auth.prune_token_history_batch(p_batch_size => %(size)s::integer)"
)
CRON_JOBS_SQL = (
    "SELECT * FROM auth.token_refresh_cron_jobs("
    "p_schedule => %(schedule)s::text, p_job_name => %(name)s::text)"
)
SCHEDULE_SQL = (
    "SELECT auth.schedule_token_refresh(p_schedule => %(schedule)s::text,"
    " p_job_name => %(name)s::text) AS job_id"
)
UNSCHEDULE_SQL = (
    "SELECT auth.unschedule_token_refresh(p_job_name => %(name)s::text) AS removed"
)
REVOKE_SQL = (
    "SELECT auth.revoke_api_token(p_token => %(token)s::text, p_reason => %(reason)s::text)"
    " AS revoked"
)
DIAGNOSE_SQL = (
    "SELECT * FROM auth.test_token_refresh_system("
    "p_token => %(token)s::text, p_apply => %(apply)s::boolean)"
)
SET_REFRESH_POLICY_SQL = (
    "SELECT auth.set_refresh_policy(p_token_type => %(token_type)s::text,"
    " p_strategy => %(strategy)s::text, p_refresh_threshold => %(refresh_threshold)s::interval,"
    " p_time_to_live => %(time_to_live)s::interval,"
    " p_max_lifetime => %(max_lifetime)s::interval,"
    " p_grace_period => %(grace_period)s::interval, p_reuse_action => %(reuse_action)s::text,"
    " p_usage_debounce => %(usage_debounce)s::interval,"
    " p_predictive_refresh => %(predictive_refresh)s::boolean) AS policy"
)

# -- the monitoring views: one text per view, shared by metrics, alerts and the dashboard --

# Refresh attempts summed by trigger, outcome and reason; per hour with by_hour (else hour
# is NULL), over the last `days` days when given (else over all hours).
REFRESH_METRICS_SQL = (
    "SELECT m.refresh_trigger, m.outcome, m.reason,"
    " CASE WHEN %(by_hour)s::boolean THEN m.hour END AS hour,"
    " sum(m.attempts)::bigint AS attempts"
    " FROM auth.refresh_metrics_hourly AS m"
    " WHERE %(days)s::integer IS NULL"
    " OR m.hour >= date_trunc('hour', now()) - make_interval(days => %(days)s::integer)"
    " GROUP BY 1, 2, 3, 4 ORDER BY 4, 1, 2, 3"
)
EXPIRY_FORECAST_SQL = (
    "SELECT f.days_ahead, f.day, f.with_refresh_path, f.without_refresh_path"
    " FROM auth.token_expiry_forecast AS f ORDER BY f.days_ahead"
)
TENANT_USAGE_SQL = (
    "SELECT t.tenant, t.live_tokens, t.idle_tokens, t.recorded_uses, t.requests_per_day"
    " FROM auth.tenant_usage_patterns AS t"
    " ORDER BY t.requests_per_day DESC NULLS LAST, t.live_tokens DESC, t.tenant"
)
OPEN_ALERTS_SQL = (
    "SELECT a.alert, a.severity, a.message, a.observed, a.since"
    " FROM auth.refresh_alerts AS a"
    " ORDER BY a.severity = 'critical' DESC, a.alert"
)
# The last real run: neither skipped (another run held the lock) nor a dry run.
LAST_BATCH_RUN_SQL = (
    "SELECT r.started_at, r.finished_at, r.duration_seconds, r.tokens_found,"
    " r.tokens_extended, r.tokens_enqueued, r.tokens_failed"
    " FROM auth.refresh_batch_runs AS r WHERE NOT r.skipped AND NOT r.dry_run"
    " ORDER BY r.started_at DESC, r.run_id DESC LIMIT 1"
)


# -- running them -------------------------------------------------------------------------

def _no_row(sql: str) -> RuntimeError:
    name = sql.split("auth.", 1)[1].split("(", 1)[0]
    return RuntimeError(f"auth.{name} returned no row")


def _one(conn: psycopg.Connection[Any], sql: str, params: Params) -> Row:
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(sql, params)
        row = cur.fetchone()
    if row is None:
        raise _no_row(sql)
    return row


def _all(conn: psycopg.Connection[Any], sql: str, params: Params) -> list[Row]:
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(sql, params)
        return cur.fetchall()


async def _one_async(conn: psycopg.AsyncConnection[Any], sql: str, params: Params) -> Row:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(sql, params)
        row = await cur.fetchone()
    if row is None:
        raise _no_row(sql)
    return row


async def _all_async(conn: psycopg.AsyncConnection[Any], sql: str, params: Params) -> list[Row]:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(sql, params)
        return await cur.fetchall()


# -- parameters: built once for both twins -------------------------------------------------

def _issue_params(user_hk: bytes, tenant_hk: bytes, scope: list[str] | None, token_type: str,
                  expires_in: str | None) -> Params:
    return {"user_hk": user_hk, "tenant_hk": tenant_hk, "scope": scope or ["api:read"],
            "token_type": token_type, "expires_in": expires_in}


def _batch_params(batch_size: int, max_tokens: int | None, threshold_days: int | None,
                  dry_run: bool) -> Params:
    return {"days": threshold_days, "size": batch_size, "max": max_tokens, "dry": dry_run}


_POLICY_FIELDS = ("strategy", "refresh_threshold", "time_to_live", "max_lifetime",
                  "grace_period", "reuse_action", "usage_debounce", "predictive_refresh")


def _policy_params(token_type: str, changes: dict[str, Any]) -> Params:
    unknown = set(changes) - set(_POLICY_FIELDS)
    if unknown:
        raise TypeError(f"set_refresh_policy: unknown settings {sorted(unknown)}")
    return {"token_type": token_type, **{f: changes.get(f) for f in _POLICY_FIELDS}}


# -- sync ---------------------------------------------------------------------------------

def register_user(conn: psycopg.Connection[Any], tenant: str, user: str) -> Row:
    """Register (idempotently) a tenant and a user by name; returns both hash keys."""
    return _one(conn, REGISTER_USER_SQL, {"tenant": tenant, "user": user})


def issue(conn: psycopg.Connection[Any], user_hk: bytes, tenant_hk: bytes, *,
          scope: list[str] | None = None, token_type: str = "PRODUCTION",
          expires_in: str | None = None) -> Row:
    return _one(conn, ISSUE_SQL, _issue_params(user_hk, tenant_hk, scope, token_type,
                                               expires_in))


def validate(conn: psycopg.Connection[Any], token: str, scope: str = "api:read") -> Row:
    return _one(conn, VALIDATE_SQL, {"token": token, "scope": scope})


def validate_and_refresh(conn: psycopg.Connection[Any], token: str, scope: str = "api:read") -> Row:
    return _one(conn, VALIDATE_AND_REFRESH_SQL, {"token": token, "scope": scope})


def refresh(conn: psycopg.Connection[Any], token: str, *, threshold_days: int | None = None,
            force: bool = False, trigger: str | None = None) -> Row:
    return _one(conn, REFRESH_SQL,
                {"token": token, "days": threshold_days, "force": force, "trigger": trigger})


def status(conn: psycopg.Connection[Any], token: str) -> Row:
    return _one(conn, STATUS_SQL, {"token": token})


def record_refresher_heartbeat(conn: psycopg.Connection[Any], instance: str,
                               tokens: list[str]) -> int:
    """The refresher's heartbeat; returns how many of ``tokens`` the database knows."""
    return int(_one(conn, HEARTBEAT_SQL, {"instance": instance, "tokens": tokens})["known"])


def refresh_batch(conn: psycopg.Connection[Any], *, batch_size: int = 1000,
                  max_tokens: int | None = None, threshold_days: int | None = None,
                  dry_run: bool = False) -> Row:
    return _one(conn, REFRESH_BATCH_SQL,
                _batch_params(batch_size, max_tokens, threshold_days, dry_run))


def prune_history_batch(conn: psycopg.Connection[Any], *, batch_size: int = 1000) -> Row:
    """One committed-by-the-caller batch of lifecycle pruning (spent tokens, dead
    families, history past its retention)."""
    return _one(conn, PRUNE_BATCH_SQL, {"size": batch_size})


def cron_jobs(conn: psycopg.Connection[Any], schedule: str, job_name: str) -> list[Row]:
    return _all(conn, CRON_JOBS_SQL, {"schedule": schedule, "name": job_name})


def schedule(conn: psycopg.Connection[Any], schedule: str = "0 */6 * * *",
             job_name: str = "token-refresh-check") -> int:
    """Schedule the batch job with pg_cron; returns the job id. Raises
    ``psycopg.errors.FeatureNotSupported`` where pg_cron is not in this database."""
    return int(_one(conn, SCHEDULE_SQL, {"schedule": schedule, "name": job_name})["job_id"])


def unschedule(conn: psycopg.Connection[Any], job_name: str = "token-refresh-check") -> bool:
    return bool(_one(conn, UNSCHEDULE_SQL, {"name": job_name})["removed"])


def revoke(conn: psycopg.Connection[Any], token: str,
           reason: str = "revoked by administrator") -> bool:
    return bool(_one(conn, REVOKE_SQL, {"token": token, "reason": reason})["revoked"])


def diagnose(conn: psycopg.Connection[Any], token: str, *, apply: bool = False) -> list[Row]:
    return _all(conn, DIAGNOSE_SQL, {"token": token, "apply": apply})


def set_refresh_policy(conn: psycopg.Connection[Any], token_type: str, **changes: Any) -> Any:
    """Change a token type's refresh policy (``grace_period="30 seconds"``,
    ``reuse_action="REJECT"``, ...); settings not given keep their value. Returns the
    policy as a dict."""
    return _one(conn, SET_REFRESH_POLICY_SQL, _policy_params(token_type, changes))["policy"]


def refresh_metrics(conn: psycopg.Connection[Any], *, days: int | None = None,
                    by_hour: bool = False) -> list[Row]:
    """Refresh attempts by trigger, outcome and reason (``auth.refresh_metrics_hourly``):
    summed over all hours, or per hour with ``by_hour``; the last ``days`` days only when
    given."""
    return _all(conn, REFRESH_METRICS_SQL, {"days": days, "by_hour": by_hour})


def expiry_forecast(conn: psycopg.Connection[Any]) -> list[Row]:
    """``auth.token_expiry_forecast``: the next 30 days, one row per day."""
    return _all(conn, EXPIRY_FORECAST_SQL, {})


def tenant_usage(conn: psycopg.Connection[Any]) -> list[Row]:
    """``auth.tenant_usage_patterns``, busiest tenant first."""
    return _all(conn, TENANT_USAGE_SQL, {})


def open_alerts(conn: psycopg.Connection[Any]) -> list[Row]:
    """``auth.refresh_alerts``: the open alerts, critical first."""
    return _all(conn, OPEN_ALERTS_SQL, {})


def last_batch_run(conn: psycopg.Connection[Any]) -> Row | None:
    """The last batch run that was neither skipped nor a dry run (``auth.refresh_batch_runs``),
    or None when there was none."""
    rows = _all(conn, LAST_BATCH_RUN_SQL, {})
    return rows[0] if rows else None


# -- async twins: the same SQL and parameters on a psycopg.AsyncConnection ------------------

async def register_user_async(conn: psycopg.AsyncConnection[Any], tenant: str, user: str) -> Row:
    return await _one_async(conn, REGISTER_USER_SQL, {"tenant": tenant, "user": user})


async def issue_async(conn: psycopg.AsyncConnection[Any], user_hk: bytes, tenant_hk: bytes, *,
                      scope: list[str] | None = None, token_type: str = "PRODUCTION",
                      expires_in: str | None = None) -> Row:
    return await _one_async(conn, ISSUE_SQL, _issue_params(user_hk, tenant_hk, scope,
                                                           token_type, expires_in))


async def validate_async(conn: psycopg.AsyncConnection[Any], token: str,
                         scope: str = "api:read") -> Row:
    return await _one_async(conn, VALIDATE_SQL, {"token": token, "scope": scope})


async def validate_and_refresh_async(conn: psycopg.AsyncConnection[Any], token: str,
                                     scope: str = "api:read") -> Row:
    return await _one_async(conn, VALIDATE_AND_REFRESH_SQL, {"token": token, "scope": scope})


async def refresh_async(conn: psycopg.AsyncConnection[Any], token: str, *,
                        threshold_days: int | None = None, force: bool = False,
                        trigger: str | None = None) -> Row:
    return await _one_async(conn, REFRESH_SQL, {"token": token, "days": threshold_days,
                                                "force": force, "trigger": trigger})


async def status_async(conn: psycopg.AsyncConnection[Any], token: str) -> Row:
    return await _one_async(conn, STATUS_SQL, {"token": token})


async def record_refresher_heartbeat_async(conn: psycopg.AsyncConnection[Any], instance: str,
                                           tokens: list[str]) -> int:
    row = await _one_async(conn, HEARTBEAT_SQL, {"instance": instance, "tokens": tokens})
    return int(row["known"])


async def refresh_batch_async(conn: psycopg.AsyncConnection[Any], *, batch_size: int = 1000,
                              max_tokens: int | None = None, threshold_days: int | None = None,
                              dry_run: bool = False) -> Row:
    return await _one_async(conn, REFRESH_BATCH_SQL,
                            _batch_params(batch_size, max_tokens, threshold_days, dry_run))


async def prune_history_batch_async(conn: psycopg.AsyncConnection[Any], *,
                                    batch_size: int = 1000) -> Row:
    return await _one_async(conn, PRUNE_BATCH_SQL, {"size": batch_size})


async def cron_jobs_async(conn: psycopg.AsyncConnection[Any], schedule: str,
                          job_name: str) -> list[Row]:
    return await _all_async(conn, CRON_JOBS_SQL, {"schedule": schedule, "name": job_name})


async def schedule_async(conn: psycopg.AsyncConnection[Any], schedule: str = "0 */6 * * *",
                         job_name: str = "token-refresh-check") -> int:
    row = await _one_async(conn, SCHEDULE_SQL, {"schedule": schedule, "name": job_name})
    return int(row["job_id"])


async def unschedule_async(conn: psycopg.AsyncConnection[Any],
                           job_name: str = "token-refresh-check") -> bool:
    return bool((await _one_async(conn, UNSCHEDULE_SQL, {"name": job_name}))["removed"])


async def revoke_async(conn: psycopg.AsyncConnection[Any], token: str,
                       reason: str = "revoked by administrator") -> bool:
    row = await _one_async(conn, REVOKE_SQL, {"token": token, "reason": reason})
    return bool(row["revoked"])


async def diagnose_async(conn: psycopg.AsyncConnection[Any], token: str, *,
                         apply: bool = False) -> list[Row]:
    return await _all_async(conn, DIAGNOSE_SQL, {"token": token, "apply": apply})


async def set_refresh_policy_async(conn: psycopg.AsyncConnection[Any], token_type: str,
                                   **changes: Any) -> Any:
    row = await _one_async(conn, SET_REFRESH_POLICY_SQL, _policy_params(token_type, changes))
    return row["policy"]


async def refresh_metrics_async(conn: psycopg.AsyncConnection[Any], *, days: int | None = None,
                                by_hour: bool = False) -> list[Row]:
    return await _all_async(conn, REFRESH_METRICS_SQL, {"days": days, "by_hour": by_hour})


async def expiry_forecast_async(conn: psycopg.AsyncConnection[Any]) -> list[Row]:
    return await _all_async(conn, EXPIRY_FORECAST_SQL, {})


async def tenant_usage_async(conn: psycopg.AsyncConnection[Any]) -> list[Row]:
    return await _all_async(conn, TENANT_USAGE_SQL, {})


async def open_alerts_async(conn: psycopg.AsyncConnection[Any]) -> list[Row]:
    return await _all_async(conn, OPEN_ALERTS_SQL, {})


async def last_batch_run_async(conn: psycopg.AsyncConnection[Any]) -> Row | None:
    rows = await _all_async(conn, LAST_BATCH_RUN_SQL, {})
    return rows[0] if rows else None
