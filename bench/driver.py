"""Drive the benchmark: pgbench runs with what they wrote and the CPU they took, the
profiler, the batch forms, the sizes, and the repetitions of every row."""

from __future__ import annotations

import glob
import json
import os
import re
import resource
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

from bench.common import DATABASE, PG_BIN, PGBENCH, SCRIPTS, counter, log, step
from bench.plan import READ_ROWS, ROTATION_ROWS, Plan, Row

# Tokens due for a refresh that nobody has acted on yet (a ROTATE token handed to the
# outbox has refresh_enqueued_at set).
DUE_COUNT = """
SELECT count(*) FROM auth.api_token_bridge AS b
WHERE b.refresh_after <= now() AND NOT b.is_revoked AND b.successor_hk IS NULL
  AND b.refresh_enqueued_at IS NULL
"""


def due_count(conn: psycopg.Connection) -> int:
    return counter(conn, DUE_COUNT)


# Rows written in auth and bench, and the bridge's updates (all, and HOT ones).
WRITES = """
SELECT coalesce(sum(n_tup_ins + n_tup_upd + n_tup_del), 0)::bigint,
       coalesce(sum(n_tup_upd) FILTER (WHERE relid = 'auth.api_token_bridge'::regclass), 0),
       coalesce(sum(n_tup_hot_upd) FILTER (WHERE relid = 'auth.api_token_bridge'::regclass), 0)
FROM pg_stat_user_tables WHERE schemaname IN ('auth', 'bench')
"""



@dataclass
class Run:
    tps: float
    transactions: int
    latencies_us: list[int]
    writes: int | None = None
    bridge_updates: tuple[int, int] | None = None  # (all, HOT)
    wal: tuple[int, int, int] | None = None  # (records, full-page images, bytes), cluster-wide
    rotated: int | None = None
    cpu_s: tuple[float, float] | None = None  # (the backends', pgbench's) CPU seconds

    def percentile(self, q: float) -> float | None:
        if not self.latencies_us:
            return None
        lat = self.latencies_us
        return lat[min(len(lat) - 1, max(0, round(q * (len(lat) - 1))))] / 1000.0


def pgbench(url: str, script: str, clients: int, defines: dict[str, int], *,
            duration: float | None = None, transactions: int | None = None,
            sampling_rate: float = 1.0) -> Run:
    """One pgbench run of a custom script; latencies from the per-transaction log."""
    logdir = tempfile.mkdtemp(prefix="pyvault-bench-")
    try:
        prefix = os.path.join(logdir, "tx")
        cmd = [str(PGBENCH), "-n", "-f", str(SCRIPTS / script), "-c", str(clients),
               "-j", str(min(clients, 2)), "-M", "prepared", "--log", f"--log-prefix={prefix}"]
        if sampling_rate < 1.0:
            cmd.append(f"--sampling-rate={sampling_rate}")
        if duration is not None:
            cmd += ["-T", str(max(1, round(duration)))]
        else:
            cmd += ["-t", str(transactions)]
        for name, value in defines.items():
            cmd += ["-D", f"{name}={value}"]
        cmd.append(url)
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=logdir)
        if proc.returncode != 0:
            raise RuntimeError(f"pgbench {script} -c {clients} failed ({proc.returncode}):\n"
                               f"{proc.stderr[-2000:]}")
        tps = re.search(r"^tps = ([\d.]+) \(without initial connection time\)", proc.stdout, re.M)
        done = re.search(r"^number of transactions actually processed: (\d+)", proc.stdout, re.M)
        failed = re.search(r"^number of failed transactions: (\d+)", proc.stdout, re.M)
        if not tps or not done:
            raise RuntimeError(f"cannot parse pgbench output:\n{proc.stdout}")
        if failed and int(failed.group(1)):
            raise RuntimeError(f"pgbench {script}: {failed.group(1)} failed transactions")
        latencies = []
        for path in glob.glob(prefix + ".*"):
            with open(path, encoding="ascii") as fh:
                for line in fh:
                    parts = line.split()
                    if len(parts) >= 3:
                        latencies.append(int(parts[2]))
        latencies.sort()
        return Run(tps=float(tps.group(1)), transactions=int(done.group(1)),
                   latencies_us=latencies)
    finally:
        shutil.rmtree(logdir, ignore_errors=True)


class CpuMeter:
    """CPU seconds of the run's backends and of pgbench, whatever else the machine runs.

    Experimental, kept in results.json only: consistent in quick runs, but on the full
    data set some runs still get their backends' CPU attributed to the next run (0 for
    one row, double for the next), so the table does not show it yet.

    The postmaster reaps every backend that exits, so its children's CPU time
    (cutime + cstime in /proc/<postmaster>/stat) grows by the CPU of each pgbench
    connection once it is gone; pgbench's own is this process's children's. Wall-clock
    TPS moves with other work on the machine; CPU per call much less. Needs the server's
    data directory to be readable here (the embedded cluster; else None). An autovacuum
    worker that exits during a run is counted with the backends.
    """

    def __init__(self, conn: psycopg.Connection):
        self.stat = None
        try:
            data_dir = counter(conn, "SHOW data_directory")
            pid = int(Path(data_dir, "postmaster.pid").read_text().split()[0])
            self.stat = Path(f"/proc/{pid}/stat")
            self.stat.read_text()
            self.pid = pid
            self.own = conn.info.backend_pid
        except (psycopg.Error, OSError, ValueError, IndexError):
            self.stat = None
        self.tick = os.sysconf("SC_CLK_TCK")
        self.children = 0

    def _children(self) -> int:
        """The postmaster's client backends, ours aside (not its background processes
        nor autovacuum workers), and its children that exited but are not reaped yet."""
        n = 0
        for proc in glob.glob("/proc/[0-9]*"):
            try:
                state, ppid = Path(proc, "stat").read_text().rsplit(")", 1)[1].split()[:2]
                if int(ppid) != self.pid or int(os.path.basename(proc)) == self.own:
                    continue
                if state == "Z":  # exited, not reaped yet (and its title is gone)
                    n += 1
                    continue
                title = Path(proc, "cmdline").read_bytes().decode(errors="replace")
                if f" {DATABASE} " in title or "[local]" in title or "127.0.0.1(" in title:
                    n += "autovacuum" not in title
            except (OSError, ValueError, IndexError):
                pass
        return n

    def now(self) -> tuple[float, float] | None:
        if self.stat is None:
            return None
        fields = self.stat.read_text().rsplit(")", 1)[1].split()
        backends = (int(fields[13]) + int(fields[14])) / self.tick  # cutime, cstime
        own = resource.getrusage(resource.RUSAGE_CHILDREN)
        return backends, own.ru_utime + own.ru_stime

    def start(self) -> tuple[float, float] | None:
        """Before a run: the CPU so far, and how many children the postmaster has."""
        if self.stat is None:
            return None
        self.children = self._children()
        return self.now()

    def delta(self, before: tuple[float, float] | None) -> tuple[float, float] | None:
        if before is None:
            return None
        # A backend leaves pg_stat_activity before it exits, and counts here only once
        # the postmaster has reaped it: wait until it has as many children as before.
        deadline = time.monotonic() + 10
        while self._children() > self.children and time.monotonic() < deadline:
            time.sleep(0.02)
        after = self.now()
        if before is None or after is None:
            return None
        return after[0] - before[0], after[1] - before[1]


def writes_now(conn: psycopg.Connection) -> tuple[int, ...]:
    """Rows written in auth and bench so far.

    A backend flushes its table counters before it leaves pg_stat_activity, so wait for
    pgbench's backends to be gone; our own pending counters are flushed on request.
    """
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and counter(
            conn, "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'pgbench'"):
        time.sleep(0.02)
    conn.execute("SELECT pg_stat_force_next_flush()")
    conn.execute("SELECT pg_stat_clear_snapshot()")
    wal = conn.execute("SELECT wal_records, wal_fpi, wal_bytes FROM pg_stat_wal").fetchone()
    return tuple(int(v) for v in conn.execute(WRITES).fetchone()) + tuple(int(v) for v in wal)


# --------------------------------------------------------------------------- profile

# Per statement, nested ones included (pg_stat_statements.track = all): a statement's time
# includes the statements it runs (a function call includes its body's statements).
PROFILE_TOP = """
SELECT toplevel, calls, total_exec_time, shared_blks_hit + shared_blks_read, wal_records,
       wal_fpi, wal_bytes, regexp_replace(query, '\\s+', ' ', 'g')
FROM bench.pg_stat_statements
WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
  AND query !~* '^(SELECT pg_stat_statements_reset|SELECT count\\(\\*\\) FROM pg_stat_activity)'
ORDER BY total_exec_time DESC
LIMIT 15
"""


class Profiler:
    """pg_stat_statements around one measured piece of work (--profile only)."""

    def __init__(self, conn: psycopg.Connection, enabled: bool):
        self.conn, self.enabled = conn, enabled
        if enabled:
            conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements WITH SCHEMA bench")

    def reset(self) -> None:
        if self.enabled:
            self.conn.execute("SELECT bench.pg_stat_statements_reset()")

    def take(self, per: int) -> list[dict] | None:
        """The top statements, with their cost per unit of work (per rotation, per token)."""
        if not self.enabled or per <= 0:
            return None
        return [{"toplevel": t, "calls_per_unit": calls / per, "us_per_call": ms * 1000 / calls,
                 "us_per_unit": ms * 1000 / per, "buffers_per_unit": blks / per,
                 "wal_records_per_unit": wr / per, "wal_fpi_per_unit": fpi / per,
                 "wal_bytes_per_unit": float(wb) / per, "query": q[:160]}
                for t, calls, ms, blks, wr, fpi, wb, q in self.conn.execute(PROFILE_TOP)
                if calls]


# --------------------------------------------------------------------------- batch


def run_batch(conn: psycopg.Connection, plan: Plan, *, job: bool) -> dict:
    """Refresh n_due of the due tokens, timed (wall).

    job=False: one call of auth.refresh_expiring_tokens_batch(p_max_tokens => n_due), one
    transaction that holds every row it took until it commits. job=True: CALL
    auth.refresh_expiring_tokens_job(), what pg_cron runs: one batch per transaction, a
    commit after each, until nothing is due (the rest of the due range, n_due tokens).
    """
    due_before = due_count(conn)
    last_event = counter(conn, "SELECT coalesce(max(event_id), 0) FROM auth.token_refresh_event")
    last_run = counter(conn, "SELECT coalesce(max(run_id), 0) FROM auth.token_refresh_batch_run")
    outbox_before = counter(conn, "SELECT count(*) FROM auth.token_refresh_outbox")
    t0 = time.perf_counter()
    if job:
        conn.execute("CALL auth.refresh_expiring_tokens_job()")
        details = None
    else:
        row = conn.execute(
            "SELECT tokens_found, tokens_refreshed, tokens_failed, details "
            "FROM auth.refresh_expiring_tokens_batch(p_max_tokens => %s)", (plan.n_due,)
        ).fetchone()
        details = json.dumps(row[3])[:300] if row[3] is not None else None
    wall = time.perf_counter() - t0
    runs = conn.execute(
        "SELECT count(*), coalesce(sum(tokens_found), 0), coalesce(sum(tokens_extended), 0), "
        "coalesce(sum(tokens_enqueued), 0), coalesce(sum(tokens_failed), 0) "
        "FROM auth.token_refresh_batch_run WHERE run_id > %s AND NOT skipped",
        (last_run,)).fetchone()
    events = dict(conn.execute(
        "SELECT outcome, count(*) FROM auth.token_refresh_event WHERE event_id > %s "
        "GROUP BY outcome", (last_event,)).fetchall())
    return {
        "how": "CALL auth.refresh_expiring_tokens_job()" if job else
               f"SELECT auth.refresh_expiring_tokens_batch(p_max_tokens => {plan.n_due})",
        "wall_s": wall, "transactions": runs[0], "due_before": due_before,
        "due_after": due_count(conn), "tokens_found": runs[1], "tokens_extended": runs[2],
        "tokens_enqueued": runs[3], "tokens_failed": runs[4], "events": events,
        "outbox_rows_added": counter(conn, "SELECT count(*) FROM auth.token_refresh_outbox")
        - outbox_before,
        "details_sample": details, "loaded_due_tokens": plan.n_due,
    }


# --------------------------------------------------------------------------- sizes


def sizes(conn: psycopg.Connection) -> dict:
    """Every table of the auth schema (whatever the migrations made), with its indexes."""
    tokens = counter(conn, "SELECT count(*) FROM auth.api_token_h")
    tables = {}
    for name, table, index, total in conn.execute(
            "SELECT c.relname, pg_table_size(c.oid), pg_indexes_size(c.oid), "
            "pg_total_relation_size(c.oid) FROM pg_class AS c "
            "WHERE c.relnamespace = 'auth'::regnamespace AND c.relkind IN ('r', 'p') "
            "ORDER BY c.relname").fetchall():
        tables[name] = {"table_bytes": table, "index_bytes": index, "total_bytes": total,
                        "mb_per_million_tokens": total * 1e6 / tokens / 2**20 if tokens else None}
    total = sum(t["total_bytes"] for t in tables.values())
    return {"tokens": tokens, "tables": tables, "total_bytes": total,
            "mb_per_million_tokens": total * 1e6 / tokens / 2**20 if tokens else None}


# --------------------------------------------------------------------------- runs


def timed_run(conn: psycopg.Connection, cpu: CpuMeter, label: str, url: str, script: str,
              clients: int, defines: dict[str, int], *,
              just_before: Callable[[], None] | None = None, **how) -> Run:
    """One pgbench run (how: its duration or transactions), with the rows and WAL it
    wrote and the CPU it took. just_before runs after the counters are read, right
    before pgbench starts."""
    before = writes_now(conn)
    cpu0 = cpu.start()
    log.print(f"  {label} ...", end="")
    if just_before is not None:
        just_before()
    run = pgbench(url, script, clients, defines, **how)
    after = writes_now(conn)
    run.cpu_s = cpu.delta(cpu0)
    run.writes = after[0] - before[0]
    run.bridge_updates = (after[1] - before[1], after[2] - before[2])
    run.wal = tuple(a - b for a, b in zip(after[3:], before[3:], strict=True))
    return run


@dataclass
class Result:
    """Every run of one row at one client count."""

    row: Row
    clients: int
    runs: list[Run] = field(default_factory=list)


@dataclass
class Measurements:
    results: dict[tuple[str, int], Result]
    batch: dict[str, dict]
    profiles: dict[str, list[dict]]
    warnings: list[str]
    # (function row id, clients) -> TPS ratios of short function/floor runs back to back
    floor_pairs: dict[tuple[str, int], list[float]] = field(default_factory=dict)


def floor_pairs(bench_url: str, plan: Plan) -> dict[tuple[str, int], list[float]]:
    """Each function against its floor in plan.pair_runs short runs back to back,
    the floor first in every other pair: on a shared machine one 10 s run's TPS moves by
    10-20% from the next one's, which is more than the few percent this ratio is about,
    and the median of many adjacent pairs is the steadiest estimate of it."""
    ratios: dict[tuple[str, int], list[float]] = {}
    held = [r for r in READ_ROWS if r.floor and not r.writes]
    floors = {r.id: r for r in READ_ROWS}
    first, last = plan.ranges["read"]
    defines = {"first": first, "last": last}
    for clients in plan.clients:
        for row in held:
            floor = floors[row.floor]
            log.print(f"  floor pairs  {clients} clients  {row.id} / {floor.id} ...", end="")
            got = ratios.setdefault((row.id, clients), [])
            for k in range(plan.pair_runs):
                order = (floor, row) if k % 2 == 0 else (row, floor)
                tps = {r.id: pgbench(bench_url, r.script, clients, defines,
                                     duration=plan.pair_duration, sampling_rate=0.01).tps
                       for r in order}
                got.append(tps[row.id] / tps[floor.id])
            log.print(f" median {statistics.median(got):.3f}")
    return ratios


def paired(rows: list[Row], *, flip: bool) -> list[Row]:
    """The rows in order, or with each function run before the floor it is held to:
    alternate repetitions flip the pairs, so that a drift of the machine's speed over
    the minutes of a run favours neither side of a ratio."""
    order = list(rows)
    if flip:
        for i, row in enumerate(order):
            if row.floor and i > 0 and order[i - 1].id == row.floor:
                order[i - 1], order[i] = row, order[i - 1]
    return order


def measure(conn: psycopg.Connection, bench_url: str, plan: Plan) -> Measurements:
    """Time every row with pgbench (connecting to bench_url), repetition by repetition,
    then both batch forms."""
    ranges = plan.ranges
    results: dict[tuple[str, int], Result] = {}
    warnings: list[str] = []
    profiler = Profiler(conn, plan.profile)
    cpu = CpuMeter(conn)
    profiles: dict[str, list[dict]] = {}
    rot_next = ranges["rotate"][0]
    read_rows = [r for r in READ_ROWS if not r.writes]
    write_rows = [r for r in READ_ROWS if r.writes]
    for rep in range(plan.reps):
        for clients in plan.clients:
            for row in paired(read_rows, flip=rep % 2 == 1) + write_rows:
                if row.kind == "hot":
                    conn.execute("UPDATE auth.api_token_bridge AS b "
                                 "SET record_use_after = '-infinity' FROM bench.hot_token "
                                 "AS h WHERE b.token_hash = h.token_hash")
                first, last = ranges[row.kind]
                run = timed_run(conn, cpu, f"rep {rep + 1}/{plan.reps}  {clients} clients  "
                                f"{row.id}", bench_url, row.script, clients,
                                {"first": first, "last": last},
                                duration=plan.duration, sampling_rate=plan.sampling_rate)
                log.print(f" {run.tps:,.0f} tps")
                results.setdefault((row.id, clients), Result(row, clients)).runs.append(run)
            for row in ROTATION_ROWS:
                per_client = plan.rotate_per_run // clients
                last_event = counter(
                    conn, "SELECT coalesce(max(event_id), 0) FROM auth.token_refresh_event")
                run = timed_run(conn, cpu, f"rep {rep + 1}/{plan.reps}  {clients} clients  "
                                f"{row.id}", bench_url, row.script, clients,
                                {"base": rot_next, "per_client": per_client, "n": 0},
                                just_before=profiler.reset, transactions=per_client)
                if rep == 0 and (prof := profiler.take(run.transactions)):
                    profiles[f"{row.id}, {clients} clients"] = prof
                rot_next += plan.rotate_per_run
                run.rotated = counter(
                    conn, "SELECT count(*) FROM auth.token_refresh_event "
                    "WHERE event_id > %s AND outcome = 'ROTATED'", last_event)
                log.print(f" {run.tps:,.0f} tps, {run.rotated} rotated")
                if run.rotated != run.transactions:
                    warnings.append(f"{row.id} at {clients} clients: {run.rotated} of "
                                    f"{run.transactions} calls rotated a token")
                results.setdefault((row.id, clients), Result(row, clients)).runs.append(run)
        # No CHECKPOINT between repetitions: after one, the first change of every page
        # writes its full image to the WAL, and a checkpoint every minute of writes
        # is not what a server that sustains them sees (checkpoint_timeout 5-30 min).
        # The first repetition follows the load's CHECKPOINT, so its write rows show
        # the cost right after one (the spread and wal_per_call_runs keep it).
        with step("settle: VACUUM"):
            conn.execute("VACUUM")

    batch = {}
    with step(f"batch: one call over {plan.n_due:,} of {due_count(conn):,} due tokens"):
        profiler.reset()
        batch["batch"] = run_batch(conn, plan, job=False)
        if prof := profiler.take(batch["batch"]["tokens_found"]):
            profiles["batch (one call)"] = prof
    with step(f"batch job: CALL auth.refresh_expiring_tokens_job() over the other "
              f"{due_count(conn):,}"):
        profiler.reset()
        batch["batch_job"] = run_batch(conn, plan, job=True)
        if prof := profiler.take(batch["batch_job"]["tokens_found"]):
            profiles["batch job"] = prof
    with step("floor pairs"):
        pairs = floor_pairs(bench_url, plan)
    return Measurements(results, batch, profiles, warnings, pairs)


# --------------------------------------------------------------------------- servers


def server_args(shared_buffers: str, *, fsync: bool, profile: bool = False) -> str:
    """The embedded clusters' settings beyond start_cluster's own (which passes -F, fsync
    off; a later -c wins)."""
    extra = (f"-c shared_buffers={shared_buffers} -c max_wal_size=8GB "
             "-c checkpoint_timeout=30min -c maintenance_work_mem=512MB")
    extra += (" -c fsync=on -c synchronous_commit=on -c full_page_writes=on"
              if fsync else " -c synchronous_commit=on")
    if profile:
        preload = ["pg_stat_statements"]
        if (PG_BIN.parent / "lib" / "pg_cron.so").exists():
            preload.insert(0, "pg_cron")  # start_cluster's, which this replaces
        extra += (f" -c shared_preload_libraries={','.join(preload)} "
                  "-c pg_stat_statements.track=all -c pg_stat_statements.max=5000")
    return extra


def create_database(pg) -> tuple[str, str]:
    """Create the benchmark's database in an embedded cluster: its URL, and the one
    pgbench uses, through the Unix socket (TCP loopback costs every call more than the
    probe the limit row measures)."""
    with psycopg.connect(pg.url(database="postgres"), autocommit=True) as c:
        c.execute(f"CREATE DATABASE {DATABASE}")
    socket_dir = os.path.join(pg.base_dir, "tmp")
    return pg.url(database=DATABASE), (f"host={socket_dir} port={pg.dsn()['port']} "
                                       f"user=postgres dbname={DATABASE}")
