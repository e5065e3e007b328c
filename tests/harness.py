"""The throwaway cluster shared by a test run: started on first use, stopped at the end.

One cluster per run; a template database is migrated once (plus pgTAP and the
``tests`` helper schema), and every test module or pgTAP file gets its own database
made with ``CREATE DATABASE ... TEMPLATE``.
"""

from __future__ import annotations

import itertools
import re
import sys
from pathlib import Path

import psycopg
import pytest

from pyvault_tokens.embedded import start_cluster
from pyvault_tokens.migrate import migrate
from tests.polling import wait_for

TESTS_DIR = Path(__file__).parent
# The command line, as a user runs it (python -m pyvault_tokens.cli).
CLI = [sys.executable, "-m", "pyvault_tokens.cli"]
TEMPLATE = "pyvault_template"
CRON_DATABASE = "postgres"
_CLUSTER = pytest.StashKey["Cluster"]()
_counter = itertools.count(1)


class Cluster:
    def __init__(self) -> None:
        self.pg = start_cluster(cron_database=CRON_DATABASE)
        self._prepare_template()

    @property
    def port(self) -> int:
        return self.pg.settings["port"]

    def url(self, database: str = "postgres") -> str:
        return self.pg.url(database=database)

    def admin(self) -> psycopg.Connection:
        return psycopg.connect(self.url(), autocommit=True)

    def create_database(self, name: str, template: str | None = None) -> str:
        with self.admin() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            suffix = f' TEMPLATE "{template}"' if template else ""
            conn.execute(f'CREATE DATABASE "{name}"{suffix}')
        return self.url(name)

    def fresh_database(self, hint: str) -> str:
        """A new migrated database, named after the test that uses it."""
        name = re.sub(r"[^a-z0-9_]", "_", hint.lower())[:40] + f"_{next(_counter)}"
        return self.create_database(name, template=TEMPLATE)

    def _prepare_template(self) -> None:
        prepare_database(self.create_database(TEMPLATE))

    def stop(self) -> None:
        self.pg.stop()


def prepare_database(url: str) -> str:
    """Migrate a database and add pgTAP and the tests helper schema."""
    migrate(url)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS pgtap")
        for helper in sorted((TESTS_DIR / "helpers").glob("*.sql")):
            conn.execute(helper.read_text(encoding="utf-8"))
    return url


def get_cluster(config: pytest.Config) -> Cluster:
    if _CLUSTER not in config.stash:
        config.stash[_CLUSTER] = Cluster()
    return config.stash[_CLUSTER]


def stop_cluster(config: pytest.Config) -> None:
    cluster = config.stash.get(_CLUSTER, None)
    if cluster is not None:
        cluster.stop()


def login(db_url: str, role: str, group: str | None = None) -> str:
    """A login role of the cluster (a member of ``group``, if given), created unless it
    exists already; the database's URL as that login (trusted, no password)."""
    member = f" IN ROLE {group}" if group else ""
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(f"DO $$ BEGIN CREATE ROLE {role} LOGIN{member};"
                     " EXCEPTION WHEN duplicate_object THEN NULL; END $$")
    return psycopg.conninfo.make_conninfo(db_url, user=role)


def password_login(cluster, db_url: str, role: str, password: str, group: str) -> str:
    """A login that must give its password (scram-sha-256, by a pg_hba.conf line for this
    role alone; the test cluster trusts everyone else), as a postgresql:// URL."""
    login(db_url, role, group)
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(f"ALTER ROLE {role} PASSWORD '{password}'")
        hba = Path(cluster.pg.base_dir) / "data" / "pg_hba.conf"
        line = f"host all {role} 127.0.0.1/32 scram-sha-256\n"
        if line not in hba.read_text():
            hba.write_text(line + hba.read_text())
            conn.execute("SELECT pg_reload_conf()")
    params = psycopg.conninfo.conninfo_to_dict(db_url)
    url = f"postgresql://{role}:{password}@127.0.0.1:{params['port']}/{params['dbname']}"
    wait_for(lambda: _can_connect(url), what="pg_hba.conf reloaded")
    return url


def _can_connect(url: str) -> bool:
    try:
        psycopg.connect(url).close()
    except psycopg.OperationalError:
        return False
    return True
