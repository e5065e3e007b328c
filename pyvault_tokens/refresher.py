"""The refresher service: keeps the tokens of machine clients fresh.

It holds their tokens in a :class:`~pyvault_tokens.store.TokenStore`, listens on the
``pyvault_token_refresh`` channel (the batch job's outbox NOTIFY) and sweeps its store
periodically. For each stored token it asks ``auth.get_token_refresh_status``; when a
refresh is recommended it calls ``auth.refresh_production_token_enhanced`` (trigger
SERVICE) and writes the result to the store.

Crash safety: a crash between the database commit and the store write loses nothing.
The store still holds the old token, which stays valid until its successor is first
used; the next sweep sees ``ALREADY_REFRESHED`` and receives the same successor.

Wake-ups are coalesced: any login may ``NOTIFY pyvault_token_refresh``, so a flood of
notifications costs at most one sweep per ``min_sweep_interval`` seconds.

LISTEN needs a session of its own: a PgBouncer in transaction (or statement) pooling mode
hands the listening server connection to other clients and never delivers its
notifications. So the listener connects to ``listen_url`` (default: the database URL;
behind such a PgBouncer, PostgreSQL's own address), and first checks with a probe NOTIFY
on a private channel, sent through the database URL, that notifications reach it. When
they do not, it logs a warning and stops listening: the service then sweeps every
``sweep_interval`` only. ``listen=False`` does without a listener from the start. Sweeps
use no server-side prepared statements, so they work through any PgBouncer mode.

Errors: while the database is unavailable (connection refused, timeout, shutting down)
the service retries with exponential backoff and logs why. Anything retrying cannot cure
(a refused login, a missing database or role, a database that is not migrated, a
standby, an unusable token store) stops it with one error line, exit code 2.

Logs are JSON lines and show a token by its prefix at most.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import signal
import socket
import time
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg import sql

from pyvault_tokens import api, errors
from pyvault_tokens.display import token_prefix
from pyvault_tokens.store import TokenStore, TokenStoreError

CHANNEL = "pyvault_token_refresh"

log = logging.getLogger("pyvault_tokens.refresher")


class JsonLogFormatter(logging.Formatter):
    """One JSON object per line: time, level, event and the record's extra fields."""

    FIELDS = ("name_", "token_prefix", "reason", "outcome", "checked", "refreshed", "failed",
              "trigger", "notifications", "sweeps", "error", "sqlstate", "retry_in", "channel",
              "detail", "hint")

    def format(self, record: logging.LogRecord) -> str:
        entry = {"ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S%z"),
                 "level": record.levelname.lower(), "event": record.getMessage()}
        for key in self.FIELDS:
            if hasattr(record, key):
                entry[key.rstrip("_")] = getattr(record, key)
        return json.dumps(entry, default=str)


class RefresherSetupError(Exception):
    """The database or the store refuses the refresher's work; retrying cannot help."""


@dataclass
class SweepResult:
    checked: int = 0
    refreshed: int = 0
    failed: int = 0


class TokenRefreshService:
    """Refresh every token in ``store`` that the database recommends refreshing."""

    def __init__(self, database_url: str, store: TokenStore, *, sweep_interval: float = 3600.0,
                 min_sweep_interval: float = 5.0, max_backoff: float = 60.0,
                 listen_url: str | None = None, listen: bool = True,
                 probe_timeout: float = 5.0) -> None:
        self.database_url = database_url
        self.listen_url = listen_url or database_url
        self.listen = listen
        self.probe_timeout = probe_timeout
        # "off" (not started or listen=False), "listening", or "deaf": notifications do not
        # reach the listener (a transaction-pooling PgBouncer), so sweeps alone remain.
        self.listener_state = "off"
        self.store = store
        self.sweep_interval = sweep_interval
        self.min_sweep_interval = min_sweep_interval
        self.max_backoff = max_backoff
        self.instance = f"{socket.gethostname()}:{Path(store.path).resolve()}"
        self.sweeps = 0  # completed sweeps
        self.notifications = 0  # notifications received
        self._wake = asyncio.Event()
        self._stop = asyncio.Event()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()

    async def refresh_one(self, conn: psycopg.AsyncConnection, name: str, token: str) -> str:
        """Check one stored token and refresh it when recommended; returns the outcome."""
        status = await api.status_async(conn, token)
        extra = {"name_": name, "token_prefix": token_prefix(token)}
        if not status["is_valid"]:
            log.warning("stored token is not valid", extra={**extra, "reason": status["message"]})
            return "invalid"
        if not status["refresh_recommended"]:
            return "fresh"
        result = await api.refresh_async(conn, token, trigger="SERVICE")
        if not result["success"]:
            log.error("refresh failed", extra={**extra, "reason": result["refresh_reason"]})
            return "failed"
        if result["new_token"]:
            stored = self.store.replace(name, token, result["new_token"], result["expires_at"])
        else:
            stored = self.store.update_expiry(name, token, result["expires_at"])
        log.info("token refreshed", extra={
            **extra, "reason": result["refresh_reason"],
            "outcome": "stored" if stored else "store changed meanwhile; kept its token"})
        return "refreshed"

    async def sweep(self, trigger: str = "manual", notifications: int = 0) -> SweepResult:
        """Check every stored token once. ``trigger`` and ``notifications`` (how many
        notifications this sweep answers) are for the log."""
        result = SweepResult()
        async with await self._connect(self.database_url) as conn:
            for name, stored in self.store.items():
                result.checked += 1
                outcome = await self.refresh_one(conn, name, stored.token)
                result.refreshed += outcome == "refreshed"
                result.failed += outcome in ("failed", "invalid")
            # Tell monitoring this service is alive and which tokens it looks after. A login
            # that may refresh but not report (say, an API login kept from before the
            # pyvault_refresher role existed) keeps refreshing: that matters more.
            try:
                await api.record_refresher_heartbeat_async(
                    conn, self.instance, [t.token for _, t in self.store.items()])
            except psycopg.errors.InsufficientPrivilege as exc:
                log.error("heartbeat refused; refreshing goes on, but monitoring will report "
                          "this refresher as not seen", extra={
                              "error": type(exc).__name__, "detail": str(exc).splitlines()[0],
                              "hint": "grant pyvault_refresher to the service's login"})
        self.sweeps += 1
        log.info("sweep done", extra={"checked": result.checked, "refreshed": result.refreshed,
                                      "failed": result.failed, "trigger": trigger,
                                      "notifications": notifications, "sweeps": self.sweeps})
        return result

    @staticmethod
    async def _connect(url: str) -> psycopg.AsyncConnection:
        # No server-side prepared statements: through a transaction-pooling PgBouncer
        # (before 1.21) a statement prepared on one server connection is unknown on the next.
        return await psycopg.AsyncConnection.connect(url, autocommit=True,
                                                     prepare_threshold=None)

    def _notified(self, notify: psycopg.Notify) -> None:
        if notify.channel == CHANNEL:
            # Only counted and flagged here: run() decides when to sweep.
            self.notifications += 1
            self._wake.set()

    async def _notifications_arrive(self, conn: psycopg.AsyncConnection) -> bool:
        """Whether a NOTIFY sent through the database URL reaches this listening
        connection: a probe on a private channel, answered within probe_timeout."""
        probe = f"pyvault_refresher_probe_{secrets.token_hex(8)}"
        await conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(probe)))
        async with await self._connect(self.database_url) as sender:
            await sender.execute("SELECT pg_catalog.pg_notify(%s::pg_catalog.text, '')",
                                 (probe,))
        arrived = False
        async for notify in conn.notifies(timeout=self.probe_timeout):
            if notify.channel == probe:
                arrived = True
                break
            self._notified(notify)
        await conn.execute(sql.SQL("UNLISTEN {}").format(sql.Identifier(probe)))
        return arrived

    async def _listen(self) -> None:
        """Wake the main loop on every outbox notification; reconnect with backoff. Stops
        for good, leaving the sweeps, when notifications do not reach the listener."""
        backoff = 1.0
        while not self._stop.is_set():
            try:
                async with await self._connect(self.listen_url) as conn:
                    await conn.execute(f"LISTEN {CHANNEL}")
                    if not await self._notifications_arrive(conn):
                        self.listener_state = "deaf"
                        # Best effort: through a pooler this may reach another server
                        # connection than the one that took the LISTEN.
                        await conn.execute("UNLISTEN *")
                        log.warning(
                            "notifications do not reach the listener; sweeping every "
                            "sweep interval only", extra={
                                "channel": CHANNEL,
                                "detail": "a probe NOTIFY did not arrive: is the listener "
                                          "behind a PgBouncer in transaction pooling mode?",
                                "hint": "pass --listen-database with PostgreSQL's own "
                                        "address (LISTEN needs a session), or --no-listen"})
                        return
                    self.listener_state = "listening"
                    log.info("listening", extra={"channel": CHANNEL})
                    backoff = 1.0
                    async for notify in conn.notifies():
                        self._notified(notify)
            except psycopg.Error as exc:
                # A setup error stops the service at its next sweep; until then, retry.
                problem = errors.classify(exc)
                log.warning("listener lost the database", extra={
                    "error": type(exc).__name__, "sqlstate": problem.sqlstate,
                    "detail": problem.detail, "retry_in": backoff})
                await self._sleep(backoff)
                backoff = min(backoff * 2, self.max_backoff)

    async def _sleep(self, seconds: float) -> None:
        if seconds <= 0:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), timeout=seconds)

    async def _next_trigger(self, last_start: float) -> str:
        """Wait for a notification or the sweep interval; a notification is answered no
        sooner than min_sweep_interval after the last sweep began, and every notification
        that arrives meanwhile is answered by that same sweep."""
        try:
            await asyncio.wait_for(self._wake.wait(), timeout=self.sweep_interval)
        except TimeoutError:
            return "interval"
        await self._sleep(last_start + self.min_sweep_interval - time.monotonic())
        return "notify"

    async def run(self, *, once: bool = False) -> None:
        """Sweep now, then on notifications (coalesced) and every sweep_interval, until
        stopped. Raises RefresherSetupError on what retrying cannot cure."""
        listener = None if once or not self.listen else asyncio.create_task(self._listen())
        backoff, trigger, answered = 1.0, "start", 0
        try:
            while not self._stop.is_set():
                self._wake.clear()
                pending, answered = self.notifications - answered, self.notifications
                started = time.monotonic()
                try:
                    await self.sweep(trigger, pending)
                    backoff = 1.0
                except (psycopg.Error, TokenStoreError) as exc:
                    problem = (errors.classify(exc) if isinstance(exc, psycopg.Error) else
                               errors.Problem(errors.OTHER, None, errors.one_line(exc)))
                    if not problem.retryable:
                        # The server's message names a function, table or role, never a value.
                        log.error("refresher is not set up on this database", extra={
                            "error": type(exc).__name__, "sqlstate": problem.sqlstate,
                            "detail": problem.detail,
                            "hint": problem.hint("refresher") or "fix the store, then restart"})
                        raise RefresherSetupError(problem.detail) from None
                    log.warning("database unavailable", extra={
                        "error": type(exc).__name__, "sqlstate": problem.sqlstate,
                        "detail": problem.detail, "retry_in": backoff})
                    await self._sleep(backoff)
                    backoff = min(backoff * 2, self.max_backoff)
                    trigger = "retry"
                    continue
                if once:
                    break
                trigger = await self._next_trigger(started)
        finally:
            if listener is not None:
                listener.cancel()
                await asyncio.gather(listener, return_exceptions=True)
        log.info("stopped", extra={"sweeps": self.sweeps})


def run_service(database_url: str, store_path: str, *, sweep_interval: float,
                min_sweep_interval: float = 5.0, once: bool = False,
                listen_url: str | None = None, listen: bool = True) -> None:
    """Run the service until SIGTERM or SIGINT, logging JSON lines to stderr."""
    handler = logging.StreamHandler()
    handler.setFormatter(JsonLogFormatter())
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False
    service = TokenRefreshService(database_url, TokenStore(store_path),
                                  sweep_interval=sweep_interval,
                                  min_sweep_interval=min_sweep_interval,
                                  listen_url=listen_url, listen=listen)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, service.stop)
        await service.run(once=once)

    try:
        asyncio.run(main())
    except RefresherSetupError:
        raise SystemExit(2) from None
