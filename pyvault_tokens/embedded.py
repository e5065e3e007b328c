"""A throwaway PostgreSQL cluster for tests, the demo and the benchmarks.

testing.postgresql starts a private cluster on a free port. PostgreSQL refuses to
run as root, so when we are root the data directory is handed to the ``postgres``
user and the server is started through ``setpriv`` (which execs the server, so the
library's own stop signal still reaches it). As any other user nothing changes.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import testing.postgresql

PG_BIN = Path("/usr/lib/postgresql/15/bin")
SERVER_USER = "postgres"
# libfaketime (Debian package libfaketime) moves a server's clock for lifecycle tests.
FAKETIME_LIB = Path("/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1")


def _running_as_root() -> bool:
    return os.geteuid() == 0


# testing.postgresql has no type information, so its class is Any to mypy.
class EmbeddedPostgresql(testing.postgresql.Postgresql):  # type: ignore[misc]
    """testing.postgresql that also works when the caller is root."""

    def __init__(self, clock_file: Path | None = None, **kwargs: Any) -> None:
        # With clock_file, the server's clock is libfaketime's: the file holds an offset
        # such as "+30d", re-read on every clock call (FAKETIME_NO_CACHE), so writing it
        # moves the server's time at once. initdb keeps the real clock.
        self._clock_file = clock_file
        kwargs.setdefault("initdb", str(PG_BIN / "initdb"))
        kwargs.setdefault("postgres", str(PG_BIN / "postgres"))
        kwargs.setdefault("initdb_args", "-U postgres -A trust --no-sync -E UTF8 --locale=C")
        if _running_as_root() and not kwargs.get("base_dir"):
            # mkdtemp under /root would be unreachable for the server user.
            kwargs["base_dir"] = tempfile.mkdtemp(prefix="pyvault-pg-", dir=_tmp_root())
            self._own_base_dir = True
        else:
            self._own_base_dir = False
        super().__init__(**kwargs)

    def initialize_database(self) -> None:
        if _running_as_root():
            user = pwd.getpwnam(SERVER_USER)
            for root, dirs, files in os.walk(self.base_dir):
                for name in [root, *(os.path.join(root, d) for d in dirs),
                             *(os.path.join(root, f) for f in files)]:
                    os.chown(name, user.pw_uid, user.pw_gid)
            os.chmod(self.base_dir, 0o700)
        data = os.path.join(self.base_dir, "data")
        if os.path.exists(os.path.join(data, "PG_VERSION")):
            return
        args = [self.initdb, "-D", data, "--lc-messages=C", *self.settings["initdb_args"].split()]
        kwargs: dict[str, Any] = {}
        if _running_as_root():
            kwargs = {"user": SERVER_USER, "group": SERVER_USER, "extra_groups": []}
        proc = subprocess.run(args, capture_output=True, text=True, **kwargs)
        if proc.returncode != 0:
            raise RuntimeError(f"initdb failed: {proc.stderr}")

    def get_server_commandline(self) -> list[str]:
        command: list[str] = super().get_server_commandline()
        if self._clock_file is not None:
            command = ["env", f"LD_PRELOAD={FAKETIME_LIB}",
                       f"FAKETIME_TIMESTAMP_FILE={self._clock_file}", "FAKETIME_NO_CACHE=1",
                       "FAKETIME_DONT_FAKE_MONOTONIC=1", *command]
        if _running_as_root():
            command = ["setpriv", f"--reuid={SERVER_USER}", f"--regid={SERVER_USER}",
                       "--init-groups", "--", *command]
        return command

    def cleanup(self) -> None:
        super().cleanup()
        if self._own_base_dir and os.path.exists(self.base_dir):
            shutil.rmtree(self.base_dir, ignore_errors=True)


def _tmp_root() -> str:
    """The temp directory, unless it sits under /root where the server user cannot enter."""
    tmp = tempfile.gettempdir()
    return "/var/tmp" if tmp.startswith("/root") else tmp  # noqa: S108 - mkdtemp under it


def start_cluster(*, cron_database: str = "postgres", extra_args: str = "",
                  clock_file: Path | None = None) -> EmbeddedPostgresql:
    """Start a cluster that preloads pg_cron (when installed) on a free port.

    With clock_file the server runs on libfaketime's clock (see EmbeddedPostgresql), and
    without pg_cron, whose scheduler would act on every jump of the clock.
    """
    args = "-h 127.0.0.1 -F -c logging_collector=off -c max_connections=200"
    if clock_file is None and (Path("/usr/lib/postgresql/15/lib") / "pg_cron.so").exists():
        args += f" -c shared_preload_libraries=pg_cron -c cron.database_name={cron_database}"
    if extra_args:
        args += " " + extra_args
    return EmbeddedPostgresql(postgres_args=args, clock_file=clock_file)
