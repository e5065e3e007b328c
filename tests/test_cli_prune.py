"""pyvault-tokens prune: the lifecycle pruning from the command line, with a line per
batch on stderr and a summary on stdout."""

from __future__ import annotations

import os
import subprocess

from tests.harness import CLI
from tests.tokens import make_token


def test_prune_moves_spent_tokens_in_batches_and_sums_them_up(conn, db_url):
    spent = []
    for n in range(3):
        token = make_token(conn, user=f"prune-{n}")
        successor = conn.execute("SELECT new_token FROM auth.refresh_production_token_enhanced("
                                 "%s, p_force => true)", (token,)).fetchone()[0]
        assert successor
        conn.execute("UPDATE auth.api_token_bridge SET valid_until = now() - interval '1 second'"
                     " WHERE token_hash = sha256(convert_to(%s, 'UTF8'))", (token,))
        spent.append(token)
    done = subprocess.run([*CLI, "prune", "--batch-size", "2"], capture_output=True, text=True,
                          env={**os.environ, "DATABASE_URL": db_url}, timeout=60)
    assert done.returncode == 0, done.stderr
    lines = done.stderr.splitlines()
    assert lines[0].startswith("batch 1: 2 spent tokens moved, 0 dead families removed")
    assert lines[1].startswith("batch 2: 1 spent tokens moved")
    assert done.stdout.strip().startswith("3 spent tokens moved out of the bridge, 0 dead"
                                          " families removed (0 tokens)")
    assert done.stdout.strip().endswith("in 2 batches")
    assert conn.execute("SELECT count(*) FROM auth.spent_token WHERE token_key = ANY(ARRAY("
                        "SELECT auth._hash_key(sha256(convert_to(t, 'UTF8')))"
                        " FROM unnest(%s::text[]) AS t))",
                        (spent,)).fetchone()[0] == 3
