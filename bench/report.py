"""Report the benchmark: one summary per row, the targets, the table, the profiles,
and the document written to results.json."""

from __future__ import annotations

import datetime as dt
import os
import platform
import statistics
import subprocess
from pathlib import Path

import psycopg
from rich.table import Table

from bench.common import PGBENCH, counter, out
from bench.driver import Measurements, Result, Run
from bench.plan import DRIVER_ID, LIMIT_ID, READ_ROWS, ROTATION_ROWS, Plan


def summarize(res: Result, limit: Result | None, driver: Result | None) -> dict:
    """A row at one client count: best TPS, latencies, ratios, writes, CPU, WAL."""
    tps = [r.tps for r in res.runs]
    p50 = [p for r in res.runs if (p := r.percentile(0.50)) is not None]
    p99 = [p for r in res.runs if (p := r.percentile(0.99)) is not None]
    best = max(tps)
    # What a call costs beyond the driver (the token read and the round trip): the
    # machine time per call, 1/TPS, less the driver's, at the same client count.
    drv = max(r.tps for r in driver.runs) if driver else None
    lim = max(r.tps for r in limit.runs) if limit else None
    net = 1e6 / best - 1e6 / drv if drv else None
    net_limit = 1e6 / lim - 1e6 / drv if drv and lim else None
    d = {
        "id": res.row.id, "label": res.row.label, "clients": res.clients,
        "tps": best, "tps_min": min(tps), "tps_max": best, "tps_runs": tps,
        "p50_ms": min(p50) if p50 else None, "p99_ms": min(p99) if p99 else None,
        "ratio_to_limit": best / lim if lim else None,
        # Each repetition's ratio (the rows of one repetition run minutes apart at most):
        # steadier than best over best when other work comes and goes.
        "ratio_to_limit_per_rep": [r.tps / lr.tps for r, lr in
                                   zip(res.runs, limit.runs, strict=False)]
        if limit else None,
        "net_us_over_driver": net,
        "net_cost_x_limit": net / net_limit if net is not None and net_limit
        and net_limit > 0 and res.row.id != DRIVER_ID else None,
        "transactions": [r.transactions for r in res.runs],
        "latency_samples": [len(r.latencies_us) for r in res.runs],
    }
    writes = [r.writes for r in res.runs if r.writes is not None]
    if writes:
        d["rows_written_per_1k_calls"] = max(
            w * 1000 / r.transactions for w, r in zip(writes, res.runs, strict=False))
    timed = [r for r in res.runs if r.cpu_s]
    if timed:
        # the run with the least backend CPU per call, and every run's
        d["backend_cpu_us_per_call"] = min(r.cpu_s[0] * 1e6 / r.transactions for r in timed)
        d["pgbench_cpu_us_per_call"] = min(r.cpu_s[1] * 1e6 / r.transactions for r in timed)
        d["backend_cpu_us_per_call_runs"] = [r.cpu_s[0] * 1e6 / r.transactions
                                             for r in timed]
    walled = [r for r in res.runs if r.wal and r.writes]
    if walled:
        def per_call(r: Run) -> dict:
            return {"records": r.wal[0] / r.transactions, "fpi": r.wal[1] / r.transactions,
                    "bytes": r.wal[2] / r.transactions}
        # that of the run with the most TPS (the figure reported), then every run's
        d["wal_per_call"] = per_call(max(walled, key=lambda r: r.tps))
        d["wal_per_call_runs"] = [per_call(r) for r in walled]
    upd = [r.bridge_updates for r in res.runs if r.bridge_updates]
    if upd and sum(u[0] for u in upd):
        d["bridge_updates"] = sum(u[0] for u in upd)
        d["bridge_hot_update_pct"] = 100.0 * sum(u[1] for u in upd) / d["bridge_updates"]
    rotated = [r.rotated for r in res.runs if r.rotated is not None]
    if rotated:
        d["rotated"] = rotated
    return d


def machine_info() -> dict:
    mem = None
    cpu = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem = int(line.split()[1]) * 1024
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "nproc": len(os.sched_getaffinity(0)), "cpu_count": os.cpu_count(), "cpu_model": cpu,
        "memory_bytes": mem, "memory_gib": round(mem / 2**30, 1) if mem else None,
        "platform": platform.platform(), "python": platform.python_version(),
        "loadavg_at_start": list(os.getloadavg()),
        "pgbench": subprocess.run([str(PGBENCH), "--version"], capture_output=True,
                                  text=True).stdout.strip(),
    }


def pg_info(conn: psycopg.Connection) -> dict:
    settings = dict(conn.execute(
        "SELECT name, current_setting(name) FROM pg_settings WHERE name IN "
        "('shared_buffers', 'fsync', 'synchronous_commit', 'full_page_writes', 'max_wal_size', "
        "'autovacuum', 'jit', 'work_mem')").fetchall())
    return {"server_version": counter(conn, "SHOW server_version"),
            "version": counter(conn, "SELECT version()"), "settings": settings}


def fmt(v: float | None, spec: str) -> str:
    return "–" if v is None else format(v, spec)


def targets(rows: list[dict], batch: dict, plan: Plan, fsync_off: bool,
            cycle: dict | None = None,
            pairs: dict[tuple[str, int], list[float]] | None = None) -> list[dict]:
    by = {(r["id"], r["clients"]): r for r in rows if r.get("tps")}
    pairs = pairs or {}
    res = []

    def add(name, value, ok, note=""):
        res.append({"target": name, "value": value, "status":
                    "n/a" if ok is None else ("PASS" if ok else "MISS"), "note": note})

    for rid in ("validate_and_refresh", "validate"):
        for c in plan.clients:
            r = by.get((rid, c))
            pair = sorted(pairs.get((rid, c), []))
            v = statistics.median(pair) if pair else None
            lo, hi = (fmt(pair[0], ".2f"), fmt(pair[-1], ".2f")) if pair else ("–", "–")
            reps = ", ".join(fmt(x, ".2f") for x in (r or {}).get("ratio_to_floor_per_rep") or [])
            add(f"{rid} (no refresh) >= 0.95x PL/pgSQL floor of its result shape, {c} clients",
                fmt(v, ".2f") + "x", None if v is None else v >= 0.95,
                f"median of {len(pair)} runs back to back with the floor "
                f"({lo}-{hi}); "
                f"the main rows' repetitions {reps}")
    for c in plan.clients:
        r = by.get(("validate_and_refresh", c))
        v = r["ratio_to_limit"] if r else None
        add(f"validate_and_refresh (no refresh) >= 0.8x limit, {c} clients",
            fmt(v, ".2f") + "x", None if v is None else v >= 0.8)
    vr, peer = by.get(("validate_and_refresh", 8)), by.get(("peer_seed", 8))
    v = vr["tps"] / peer["tps"] if vr and peer else None
    add("validate_and_refresh >= 5x peer, 8 clients", fmt(v, ".1f") + "x",
        None if v is None else v >= 5,
        "fsync is off: the peer's commits skip the WAL flush" if fsync_off else "fsync on")
    for rid in ("rotate_validate_and_refresh", "rotate_refresh_enhanced"):
        best = max((by[(rid, c)]["tps"] for c in plan.clients if (rid, c) in by), default=None)
        add(f"{rid} >= 2,000 rotations/s, goal 4,000 (best of 2/8 clients)",
            fmt(best, ",.0f") + "/s", None if best is None else best >= 2000)
    for name, b in batch.items():
        scaled = b["wall_s"] * 100_000 / max(1, b["loaded_due_tokens"])
        note = "" if b["loaded_due_tokens"] == 100_000 else \
            f"scaled from {b['loaded_due_tokens']:,} due tokens"
        add(f"{name} over 100k due tokens < 10 s, goal 3 s", f"{scaled:.1f} s", scaled < 10,
            note)
    if cycle:
        first, last = cycle["days"][0], cycle["days"][-1]
        ratio = {key: cycle["ratios"][f"{key}_day{last['day']}"]
                 for key in ("storage", "tps", "us_over_driver")}
        add(f"lifecycle: bytes per live token at day {last['day']} <= 2.5x day 0 "
            f"({cycle['clients']:,} clients)", fmt(ratio["storage"], ".2f") + "x",
            None if ratio["storage"] is None else ratio["storage"] <= 2.5,
            f"{first['bytes_per_live_token']:,.0f} -> {last['bytes_per_live_token']:,.0f} B")
        add(f"lifecycle: validate_and_refresh TPS at day {last['day']} >= 0.95x day 0 "
            f"({cycle['pgbench_clients']} clients)", fmt(ratio["tps"], ".2f") + "x",
            None if ratio["tps"] is None else ratio["tps"] >= 0.95,
            f"{first['tps']:,.0f} -> {last['tps']:,.0f} TPS, µs over driver "
            f"{fmt(ratio['us_over_driver'], '.2f')}x; the days' runs are minutes apart, so "
            "other work on the machine moves them")
    return res


def render(rows: list[dict], batch: dict, size: dict, tgts: list[dict], plan: Plan,
           meta: dict, cycle: dict | None = None) -> None:
    settings = meta["postgres"]["settings"]
    title = (f"pyvault-tokens hot path: {size['tokens']:,} tokens, "
             f"{'quick, ' if plan.quick else ''}best of {plan.reps} x {plan.duration:g} s, "
             f"{meta['machine']['nproc']} cpu, PostgreSQL {meta['postgres']['server_version']}, "
             f"fsync {settings.get('fsync')}, synchronous_commit "
             f"{settings.get('synchronous_commit')}, pgbench over {meta['pgbench_connection']}, "
             f"load {meta['machine']['loadavg_at_start'][0]:.1f}")
    table = Table(title=title, title_justify="left")
    table.add_column("row", no_wrap=True)
    table.add_column("clients", justify="right")
    table.add_column("TPS", justify="right")
    table.add_column("spread (min–max)", justify="right")
    table.add_column("p50 ms", justify="right")
    table.add_column("p99 ms", justify="right")
    table.add_column("× LIMIT", justify="right")
    table.add_column("µs over driver", justify="right")
    table.add_column("note")
    prev = None
    for r in rows:
        if prev and prev != r["id"]:
            table.add_row()
        prev = r["id"]
        notes = []
        if "rows_written_per_1k_calls" in r:
            notes.append(f"{r['rows_written_per_1k_calls']:,.0f} rows written/1k")
        if "wal_per_call" in r:
            w = r["wal_per_call"]
            notes.append(f"WAL/call {w['bytes']:,.0f} B, {w['fpi']:.2f} FPI")
        if "bridge_updates" in r:
            notes.append(f"bridge upd {r['bridge_updates']:,}, "
                         f"{r['bridge_hot_update_pct']:.0f}% HOT")
        if "rotated" in r:
            notes.append(f"rotated {sum(r['rotated']):,}/{sum(r['transactions']):,}")
        table.add_row(
            r["label"], str(r["clients"]), fmt(r["tps"], ",.0f"),
            f"{r['tps_min']:,.0f}–{r['tps_max']:,.0f}", fmt(r["p50_ms"], ".3f"),
            fmt(r["p99_ms"], ".3f"), fmt(r["ratio_to_limit"], ".2f"),
            fmt(r["net_us_over_driver"], ",.1f") if r["id"] != DRIVER_ID else "0",
            "; ".join(notes))
    table.add_row()
    for name, b in batch.items():
        table.add_row(
            f"{name}: {b['how']}", "1",
            f"{b['tokens_found'] / b['wall_s']:,.0f}" if b["wall_s"] else "–",
            "", "", "", "", "",
            f"wall {b['wall_s']:.2f} s, {b['transactions']} transaction(s); found "
            f"{b['tokens_found']:,}: extended {b['tokens_extended']:,}, enqueued "
            f"{b['tokens_enqueued']:,}, failed {b['tokens_failed']:,}; {b['due_after']:,} "
            "still due")
    top = sorted(size["tables"].items(), key=lambda kv: -kv[1]["total_bytes"])[:4]
    table.add_row("size: auth tables + indexes per 1M tokens", "", "", "", "", "", "", "",
                  f"{size['mb_per_million_tokens']:,.0f} MB ("
                  + ", ".join(f"{k} {v['mb_per_million_tokens']:,.0f}" for k, v in top) + ")")
    if cycle:
        table.add_row()
        for d in cycle["days"]:
            notes = [f"{d['bytes_per_live_token']:,.0f} B per live token ({d['live_tokens']:,} "
                     f"live, {d['bridge_rows']:,} bridge rows)", f"driver {d['driver_tps']:,.0f}"]
            if day := d["day"]:
                r = {key: fmt(cycle["ratios"][f"{key}_day{day}"], ".2f")
                     for key in ("storage", "tps", "us_over_driver")}
                notes.append(f"× day 0: storage {r['storage']}, TPS {r['tps']}, µs over "
                             f"driver {r['us_over_driver']}")
            if "rows_written_per_1k_calls" in d:
                notes.append(f"{d['rows_written_per_1k_calls']:,.0f} rows written/1k")
            table.add_row(
                f"lifecycle, {cycle['clients']:,} clients, day {d['day']}: validate_and_refresh",
                str(d["clients"]), fmt(d["tps"], ",.0f"),
                f"{d['tps_min']:,.0f}–{d['tps_max']:,.0f}", fmt(d["p50_ms"], ".3f"),
                fmt(d["p99_ms"], ".3f"), "", fmt(d["net_us_over_driver"], ",.1f"),
                "; ".join(notes))
    out.print(table)
    out.print("Targets (reported, not asserted):")
    for t in tgts:
        colour = {"PASS": "green", "MISS": "red"}.get(t["status"], "yellow")
        note = f"  ({t['note']})" if t["note"] else ""
        out.print(f"  [{colour}]{t['status']:>4}[/]  {t['target']}: {t['value']}{note}")


def render_profile(name: str, unit: str, statements: list[dict]) -> None:
    table = Table(title=f"where the time goes: {name} (pg_stat_statements, track = all; a "
                        "statement's time includes the statements it runs)",
                  title_justify="left")
    for col in ("calls/" + unit, "µs/call", "µs/" + unit, "buffers/" + unit,
                "WAL rec/" + unit, "FPI/" + unit, "WAL B/" + unit):
        table.add_column(col, justify="right")
    table.add_column("statement")
    for st in statements:
        table.add_row(f"{st['calls_per_unit']:.2f}", f"{st['us_per_call']:,.1f}",
                      f"{st['us_per_unit']:,.1f}", f"{st['buffers_per_unit']:.1f}",
                      f"{st['wal_records_per_unit']:.1f}", f"{st['wal_fpi_per_unit']:.2f}",
                      f"{st['wal_bytes_per_unit']:,.0f}",
                      ("" if st["toplevel"] else "  ") + st["query"][:110])
    out.print(table)


def summarize_rows(results: dict[tuple[str, int], Result], plan: Plan) -> list[dict]:
    """Every row in table order, each beside the LIMIT and driver rows of its client count."""
    order = [r.id for r in READ_ROWS + ROTATION_ROWS]
    rows = []
    for rid in order:
        for clients in plan.clients:
            res = results.get((rid, clients))
            if res:
                rows.append(summarize(res, results.get((LIMIT_ID, clients)),
                                      results.get((DRIVER_ID, clients))))
    # Backend CPU per call as a multiple of the LIMIT probe's, at the same client count:
    # the ratio least moved by other work on the machine.
    lim_cpu = {r["clients"]: r.get("backend_cpu_us_per_call") for r in rows
               if r["id"] == LIMIT_ID}
    for r in rows:
        base = lim_cpu.get(r["clients"])
        mine = r.get("backend_cpu_us_per_call")
        r["backend_cpu_x_limit"] = mine / base if mine and base else None
        floor = next((f for f in READ_ROWS if f.id == r["id"] and f.floor), None)
        if floor and (fr := results.get((floor.floor, r["clients"]))):
            # Best over best, and each repetition's ratio: a floor runs beside the
            # function held to it, seconds apart, so the per-repetition ratio is the one
            # least moved by other work on the machine.
            own = results[(r["id"], r["clients"])].runs
            r["floor"] = floor.floor
            r["ratio_to_floor"] = r["tps"] / max(x.tps for x in fr.runs)
            r["ratio_to_floor_per_rep"] = [a.tps / b.tps for a, b in
                                           zip(own, fr.runs, strict=False)]
    return rows


def report(measured: Measurements, size: dict, info: dict, plan: Plan, meta: dict,
           cluster_info: dict, cycle: dict | None = None) -> dict:
    """Print the table, the targets, the profiles and the warnings; the results document."""
    batch, profiles, warnings = measured.batch, measured.profiles, measured.warnings
    rows = summarize_rows(measured.results, plan)
    tgts = targets(rows, batch, plan, meta["postgres"]["settings"].get("fsync") == "off", cycle,
                   measured.floor_pairs)
    render(rows, batch, size, tgts, plan, meta, cycle)
    for name, prof in profiles.items():
        render_profile(name, "token" if name.startswith("batch") else "rotation", prof)
    if plan.profile:
        out.print("[yellow]--profile:[/] pg_stat_statements tracks every nested statement, "
                  "which slows every row; compare TPS from a run without --profile.")
    for w in warnings:
        out.print(f"[yellow]warning:[/] {w}")
    return {
        "timestamp": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "mode": "quick" if plan.quick else "full",
        "fsync": meta["postgres"]["settings"].get("fsync") == "on",
        **meta,
        "cluster": cluster_info,
        "config": {
            "duration_s": plan.duration, "reps": plan.reps, "clients": list(plan.clients),
            "rotate_transactions_per_run": plan.rotate_per_run,
            "sampling_rate": plan.sampling_rate, "tenants": plan.tenants, "users": plan.users,
            "token_source": "bench.token (i bigint PRIMARY KEY, token text), read by i in "
                            "each measured statement; made at load time as 'ovt_prod_' || "
                            "encode(sha256(convert_to('bench' || i, 'UTF8')), 'hex')",
            "read_range_record_use_after": "infinity (the debounce never writes)",
            "hot_range_record_use_after": "-infinity, reset before every run",
            "floor_pairs": f"{plan.pair_runs} x {plan.pair_duration:g} s runs back to back "
                           "with the floor, the floor first in every other pair",
        },
        "load": info,
        "rows": rows,
        "batch": batch,
        "sizes": size,
        "lifecycle": cycle,
        "floor_pairs": [{"id": rid, "clients": c, "ratios": v}
                        for (rid, c), v in measured.floor_pairs.items()],
        "targets": tgts,
        "profiles": profiles,
        "warnings": warnings,
    }
