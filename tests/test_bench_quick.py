"""`bench/run.py --quick` runs end to end on a fresh database.

No timing is asserted, not even as a ratio: the suite shares two cores with other work.
What is checked is that every row ran, that the read rows wrote nothing, that every
rotation call rotated, that both batch forms handled what they found, and that the
lifecycle row (its own cluster on libfaketime's clock) measured days 0, 100 and 200 with
every client holding one live token."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

TIMED_ROWS = {
    "driver", "limit_bridge", "plpgsql_floor_validate", "validate", "plpgsql_floor",
    "validate_and_refresh",
    "validate_and_refresh_debounce", "peer_seed", "rotate_validate_and_refresh",
    "rotate_refresh_enhanced",
}
READ_ONLY_ROWS = {"driver", "limit_bridge", "plpgsql_floor_validate", "validate", "plpgsql_floor",
                  "validate_and_refresh"}
# Fewer than the quick mode's 800 clients: the suite needs the row to run, not its figures.
LIFECYCLE_CLIENTS = 200


def test_bench_quick(db_url: str, tmp_path: Path) -> None:
    output = tmp_path / "results.json"
    proc = subprocess.run(
        [sys.executable, str(REPO / "bench" / "run.py"), "--quick", "--database", db_url,
         "--output", str(output), "--lifecycle-clients", str(LIFECYCLE_CLIENTS)],
        cwd=REPO, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]

    # The table and the target lines are printed.
    assert "LIMIT: index probe, api_token_bridge" in proc.stdout
    assert "validate_and_refresh, no refresh due" in proc.stdout
    assert "size: auth tables + indexes per 1M tokens" in proc.stdout
    assert "Targets (reported, not asserted):" in proc.stdout
    assert ("validate_and_refresh (no refresh) >= 0.95x PL/pgSQL floor of its result shape"
            in proc.stdout)
    assert "lifecycle, 200 clients, day 200: validate_and_refresh" in proc.stdout
    assert "lifecycle: bytes per live token at day 200 <= 2.5x day 0" in proc.stdout

    result = json.loads(output.read_text(encoding="utf-8"))
    assert result["mode"] == "quick"
    assert result["machine"]["nproc"] >= 1
    assert result["postgres"]["server_version"]
    assert result["timestamp"]

    rows = {(r["id"], r["clients"]): r for r in result["rows"]}
    for row_id in TIMED_ROWS:
        for clients in (2, 8):
            row = rows.get((row_id, clients))
            assert row is not None, f"missing row {row_id} at {clients} clients"
            assert row["tps"] > 0, row
            assert row["p50_ms"] is not None and row["p99_ms"] is not None, row
    # Both batch forms ran, each over its own half of the due range, and left none due.
    for name in ("batch", "batch_job"):
        batch = result["batch"][name]
        assert batch["tokens_found"] == batch["loaded_due_tokens"], batch
        assert batch["tokens_extended"] + batch["tokens_enqueued"] == batch["tokens_found"], batch
    assert result["batch"]["batch_job"]["due_after"] == 0, result["batch"]
    for row in result["rows"]:
        assert row["net_us_over_driver"] is not None, row
        # The read rows write nothing (record_use_after = 'infinity' on the read range);
        # every rotation call rotated its token.
        if row["id"] in READ_ONLY_ROWS:
            assert row["rows_written_per_1k_calls"] == 0, row
        if row["id"].startswith("rotate_"):
            assert sum(row["rotated"]) == sum(row["transactions"]), row
    # Each validator is held to the floor of its own result shape, repetition by repetition.
    for row_id, floor in (("validate", "plpgsql_floor_validate"),
                          ("validate_and_refresh", "plpgsql_floor")):
        row = rows[(row_id, 2)]
        assert row["floor"] == floor and row["ratio_to_floor"] > 0, row
        assert len(row["ratio_to_floor_per_rep"]) == len(row["tps_runs"]), row
    # ...and in short runs back to back with it, at both client counts.
    pairs = {(p["id"], p["clients"]): p["ratios"] for p in result["floor_pairs"]}
    assert set(pairs) == {(f, c) for f in ("validate", "validate_and_refresh") for c in (2, 8)}
    assert all(len(v) == 2 and min(v) > 0 for v in pairs.values()), pairs
    assert result["sizes"]["mb_per_million_tokens"] > 0
    assert {t["status"] for t in result["targets"]} <= {"PASS", "MISS", "n/a"}

    # The lifecycle row: no client was ever refused, and on each measured day every client
    # held one live token, and both storage and speed were measured.
    cycle = result["lifecycle"]
    assert cycle is not None, "libfaketime missing? (tools/install-debian-packages)"
    assert cycle["refused_uses"] == 0 and cycle["rotations"] > 0, cycle
    assert [d["day"] for d in cycle["days"]] == [0, 100, 200]
    for day in cycle["days"]:
        assert day["live_tokens"] == cycle["clients"] == LIFECYCLE_CLIENTS, day
        assert day["bytes_per_live_token"] > 0 and day["tps"] > 0 and day["driver_tps"] > 0
    for key in ("storage", "tps", "us_over_driver"):
        for day in (100, 200):
            assert cycle["ratios"][f"{key}_day{day}"] is not None, cycle["ratios"]
