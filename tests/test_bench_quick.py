"""`bench/run.py --quick` runs end to end on a fresh database. Speed is never asserted."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

TIMED_ROWS = {
    "floor", "limit_bridge", "plpgsql_floor", "validate", "validate_and_refresh",
    "validate_and_refresh_debounce", "peer_seed", "rotate_validate_and_refresh",
    "rotate_refresh_enhanced",
}


def test_bench_quick(db_url: str, tmp_path: Path) -> None:
    output = tmp_path / "results.json"
    proc = subprocess.run(
        [sys.executable, str(REPO / "bench" / "run.py"), "--quick", "--database", db_url,
         "--output", str(output)],
        cwd=REPO, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]

    # The table and the target lines are printed.
    assert "LIMIT: index probe, api_token_bridge" in proc.stdout
    assert "validate_and_refresh, no refresh due" in proc.stdout
    assert "size: auth tables + indexes per 1M tokens" in proc.stdout
    assert "Targets (reported, not asserted):" in proc.stdout

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
    assert "available" in result["batch"]
    if not result["batch"]["available"]:
        assert "not available yet" in proc.stdout
    assert result["sizes"]["mb_per_million_tokens"] > 0
    assert {t["status"] for t in result["targets"]} <= {"PASS", "MISS", "n/a"}
