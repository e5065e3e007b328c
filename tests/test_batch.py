"""The batch refresh at scale, under concurrency, through a crash, and from pg_cron."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import psycopg
import pytest

from tests.crash import batch_runs, own_cluster, start_batch_job, wait_for_batches
from tests.harness import CLI, CRON_DATABASE, prepare_database
from tests.polling import wait_for

READY = "database system is ready to accept connections"



def test_100k_tokens_of_mixed_policies(conn):
    for token_type, expires_in in (("API_KEY", "3 days"), ("PRODUCTION", "3 days"),
                                   ("API_KEY", "20 days"), ("PRODUCTION", "20 days")):
        conn.execute("SELECT tests.bulk_tokens(25000, %s, %s::interval)", (token_type, expires_in))
    conn.execute("VACUUM ANALYZE auth.api_token_bridge")
    started = time.monotonic()
    conn.execute("CALL auth.refresh_expiring_tokens_job(5000)")
    elapsed = time.monotonic() - started
    counts = conn.execute("""
        SELECT count(*) FILTER (WHERE token_type = 'API_KEY'
                                  AND expires_at > now() + interval '89 days'),
               count(*) FILTER (WHERE expires_at BETWEEN now() + interval '19 days'
                                                     AND now() + interval '21 days'),
               (SELECT count(*) FROM auth.token_refresh_outbox WHERE processed_at IS NULL),
               (SELECT count(*) FROM auth.token_refresh_outbox AS o
                JOIN auth.api_token_bridge AS b USING (api_token_hk)
                WHERE b.token_type <> 'PRODUCTION' OR b.expires_at > now() + interval '7 days'),
               tests.inconsistent_tokens()
        FROM auth.api_token_bridge""").fetchone()
    assert counts == (25000, 50000, 25000, 0, 0), counts
    runs = conn.execute("SELECT count(*), sum(tokens_found) FROM auth.token_refresh_batch_run"
                        " WHERE tokens_found > 0").fetchone()
    assert runs == (10, 50000), "one committed batch of 5,000 per call"
    print(f"100k tokens, 50k due: job took {elapsed:.1f}s")

    conn.execute("CALL auth.refresh_expiring_tokens_job(5000)")
    assert batch_runs(conn) == 10, "a second run finds nothing new to do"


def test_a_second_concurrent_run_is_skipped(conn, db_url):
    conn.execute("SELECT tests.bulk_tokens(10, 'API_KEY', '3 days', 'concurrent')")
    with psycopg.connect(db_url) as first:  # holds the run's lock until it commits
        row = first.execute("SELECT tokens_found, details FROM"
                            " auth.refresh_expiring_tokens_batch()").fetchone()
        assert row[0] == 10 and row[1]["skipped"] is False
        with psycopg.connect(db_url, autocommit=True) as second:
            skipped = second.execute("SELECT tokens_found, details FROM"
                                     " auth.refresh_expiring_tokens_batch()").fetchone()
            notices: list[str] = []
            second.add_notice_handler(lambda d: notices.append(d.message_primary))
            second.execute("CALL auth.refresh_expiring_tokens_job()")
        first.commit()
    assert skipped[0] == 0 and skipped[1] == {
        "skipped": True, "reason": "another batch run is in progress"}
    assert any("skipped" in n for n in notices)


def test_refresh_batch_cli_shows_a_summary(db_url, conn):
    conn.execute("SELECT tests.bulk_tokens(12, 'API_KEY', '3 days', 'cli')")
    env = {**os.environ, "DATABASE_URL": db_url}
    dry = subprocess.run([*CLI, "refresh-batch", "--dry-run"], capture_output=True, text=True,
                         env=env)
    assert dry.returncode == 0, dry.stderr
    assert "12 tokens due: 12 would be extended" in dry.stdout
    real = subprocess.run([*CLI, "refresh-batch", "--batch-size", "5"], capture_output=True,
                          text=True, env=env)
    assert real.returncode == 0, real.stderr
    assert "12 tokens due: 12 were extended, 0 were enqueued" in real.stdout


def test_sigkill_mid_run_leaves_every_token_refreshed_or_untouched():
    """On a cluster of its own: killing a backend makes PostgreSQL restart every session."""
    with own_cluster("crash") as (pg, url):
        with psycopg.connect(url, autocommit=True) as c:
            c.execute("SELECT tests.bulk_tokens(20000, 'API_KEY', '3 days')")
        job, worker, errors = start_batch_job(url, 100)
        pid = job.info.backend_pid
        wait_for_batches(url, 3)
        log = Path(pg.base_dir, "EmbeddedPostgresql.log")
        ready = log.read_text(errors="replace").count(READY)
        os.kill(pid, signal.SIGKILL)
        worker.join(30)
        assert errors, "the killed run must fail"
        job.close()

        check = _connect_after_crash(url, log, ready)
        with check:
            state = check.execute("""
                SELECT count(*) FILTER (WHERE expires_at > now() + interval '80 days'),
                       count(*) FILTER (WHERE expires_at < now() + interval '4 days'),
                       count(*),
                       tests.inconsistent_tokens(),
                       (SELECT count(*) FROM auth.token_refresh_event WHERE outcome = 'EXTENDED')
                FROM auth.api_token_bridge""").fetchone()
            extended, untouched, total, inconsistent, events = state
            assert total == 20000 and extended + untouched == total, state
            assert 0 < extended < total, "the kill landed mid-run"
            assert inconsistent == 0 and events == extended
            check.execute("CALL auth.refresh_expiring_tokens_job(5000)")
            after = check.execute("SELECT count(*) FILTER (WHERE expires_at > now() + interval"
                                  " '80 days'), tests.inconsistent_tokens()"
                                  " FROM auth.api_token_bridge").fetchone()
            assert after == (20000, 0), "a rerun completes the rest"


def _connect_after_crash(url: str, log: Path, ready: int,
                         timeout: float = 60) -> psycopg.Connection:
    """A connection that survived the server's crash restart. Right after a backend is
    killed a new connection may still be accepted, then be ended by the restart: wait for
    the log to say the server is ready again (once more than ``ready`` times)."""
    wait_for(lambda: log.read_text(errors="replace").count(READY) > ready, timeout=timeout,
             what="the crash restart", interval=0.05)
    deadline = time.monotonic() + timeout
    while True:
        try:
            conn = psycopg.connect(url, autocommit=True)
            conn.execute("SELECT pg_sleep(0.5)")
            conn.execute("SELECT 1")
            return conn
        except psycopg.OperationalError:
            assert time.monotonic() < deadline, "the cluster did not recover"
            time.sleep(0.2)


@pytest.fixture(scope="module")
def cron_db(cluster) -> str:
    """The cluster's cron database, migrated, with pg_cron."""
    url = prepare_database(cluster.url(CRON_DATABASE))
    with psycopg.connect(url, autocommit=True) as c:
        c.execute("CREATE EXTENSION IF NOT EXISTS pg_cron")
    return url


def test_schedule_is_idempotent_and_the_seed_line_works(cron_db):
    with psycopg.connect(cron_db, autocommit=True) as c:
        first = c.execute("SELECT auth.schedule_token_refresh()").fetchone()[0]
        second = c.execute("SELECT auth.schedule_token_refresh('0 */2 * * *')").fetchone()[0]
        jobs = c.execute("SELECT jobname, schedule FROM cron.job WHERE jobname LIKE"
                         " 'token-refresh-check%' ORDER BY 1").fetchall()
        assert first == second
        assert jobs == [("token-refresh-check", "0 */2 * * *"),
                        ("token-refresh-check-history", "41 4 * * *"),
                        ("token-refresh-check-prune", "17 3 * * *")]
        c.execute("SELECT cron.schedule('token-refresh-check', '0 */6 * * *',"
                  " $$ SELECT auth.refresh_expiring_tokens_batch(); $$)")
        assert c.execute("SELECT count(*) FROM cron.job WHERE jobname = 'token-refresh-check'"
                         ).fetchone()[0] == 1
        assert c.execute("SELECT auth.unschedule_token_refresh()").fetchone()[0] is True
        assert c.execute("SELECT count(*) FROM cron.job").fetchone()[0] == 0


def test_one_job_matcher_for_diagnostics_and_alerts_in_a_real_pg_cron_database(cron_db):
    """Right after schedule_token_refresh the SCHEDULE step is OK (it once looked for the
    seed's command only); a failed run of our job raises CRON_JOB_FAILED, and of another
    job does not; the prune job's command is valid SQL that deletes old runs."""
    with psycopg.connect(cron_db, autocommit=True) as c:
        token = c.execute("SELECT tests.make_token()").fetchone()[0]

        def schedule_step():
            return c.execute("SELECT result, details FROM auth.test_token_refresh_system(%s)"
                             " WHERE step = 'SCHEDULE'", (token,)).fetchone()

        assert schedule_step()[0].startswith("WARN: no active pg_cron job runs the batch")
        job = c.execute("SELECT auth.schedule_token_refresh()").fetchone()[0]
        other = c.execute("SELECT cron.schedule('someone-else', '0 1 * * *', 'SELECT 1')"
                          ).fetchone()[0]
        try:
            result, details = schedule_step()
            assert result == "OK"
            assert sorted((j["jobname"], j["kind"]) for j in details["jobs"]) == [
                ("token-refresh-check", "batch"), ("token-refresh-check-history", "history"),
                ("token-refresh-check-prune", "prune")]
            c.execute("INSERT INTO cron.job_run_details (jobid, runid, database, username,"
                      " command, status, start_time, end_time) SELECT j, nextval("
                      "'cron.runid_seq'), current_database(), current_user, 'x', 'failed',"
                      " now() - interval '1 hour', now() - interval '1 hour'"
                      " FROM unnest(ARRAY[%s, %s]::bigint[]) AS j", (job, other))
            alerts = dict(c.execute("SELECT alert, observed FROM auth.refresh_alerts").fetchall())
            assert alerts.get("CRON_JOB_FAILED") == 1
            assert schedule_step()[0] == "WARN: the last run of a batch job failed"
            c.execute("UPDATE cron.job_run_details SET end_time = now() - interval '15 days'"
                      " WHERE jobid = %s", (job,))
            prune = c.execute("SELECT command FROM auth.token_refresh_cron_jobs()"
                              " WHERE job_name LIKE '%%-prune'").fetchone()[0]
            c.execute(prune)
            left = c.execute("SELECT jobid FROM cron.job_run_details WHERE jobid IN (%s, %s)",
                             (job, other)).fetchall()
            assert left == [(other,)]
        finally:
            c.execute("SELECT auth.unschedule_token_refresh()")
            c.execute("SELECT cron.unschedule('someone-else')")
            c.execute("DELETE FROM cron.job_run_details")


def test_a_real_pg_cron_job_runs_the_batch(cron_db):
    with psycopg.connect(cron_db, autocommit=True) as c:
        c.execute("SELECT tests.bulk_tokens(5, 'API_KEY', '3 days', 'cron')")
        job = c.execute("SELECT auth.schedule_token_refresh('* * * * *', 'test-refresh')"
                        ).fetchone()[0]
        try:
            deadline = time.monotonic() + 100
            status = None
            while time.monotonic() < deadline:
                status = c.execute("SELECT status, return_message FROM cron.job_run_details"
                                   " WHERE jobid = %s ORDER BY start_time DESC LIMIT 1",
                                   (job,)).fetchone()
                if status and status[0] in ("succeeded", "failed"):
                    break
                time.sleep(1)
            assert status is not None and status[0] == "succeeded", status
            extended = c.execute(
                "SELECT count(*) FROM auth.api_token_bridge AS b JOIN auth.user_h AS u"
                " USING (user_hk) WHERE u.user_bk = 'cron' AND b.expires_at >"
                " now() + interval '80 days'").fetchone()[0]
            assert extended == 5
        finally:
            c.execute("SELECT auth.unschedule_token_refresh('test-refresh')")


def test_cli_schedules_from_another_database_with_schedule_in_database(cron_db, db_url):
    env = {**os.environ, "DATABASE_URL": db_url}
    dbname = psycopg.conninfo.conninfo_to_dict(db_url)["dbname"]
    done = subprocess.run([*CLI, "schedule", "--job-name", "elsewhere"], capture_output=True,
                          text=True, env=env)
    assert done.returncode == 0, done.stderr
    with psycopg.connect(cron_db, autocommit=True) as c:
        jobs = c.execute("SELECT jobname, database FROM cron.job WHERE jobname LIKE"
                         " 'elsewhere%' ORDER BY 1").fetchall()
    assert jobs == [("elsewhere", dbname), ("elsewhere-history", dbname),
                    ("elsewhere-prune", CRON_DATABASE)]
    gone = subprocess.run([*CLI, "unschedule", "--job-name", "elsewhere"], capture_output=True,
                          text=True, env=env)
    assert gone.returncode == 0, gone.stderr
    with psycopg.connect(cron_db, autocommit=True) as c:
        assert c.execute("SELECT count(*) FROM cron.job WHERE jobname LIKE 'elsewhere%'"
                         ).fetchone()[0] == 0
