"""The command line, run as a real subprocess against a real database."""

from __future__ import annotations

import os
import re
import subprocess

import pytest

from tests.harness import CLI

WHOLE_TOKEN = re.compile(r"ovt_prod_[0-9a-f]{64}")


def run(db_url: str, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "DATABASE_URL": db_url}
    return subprocess.run([*CLI, *args], input=stdin, capture_output=True, text=True, env=env)


@pytest.fixture(scope="module")
def near_token(db_url) -> str:
    result = run(db_url, "issue", "--user", "cli", "--tenant", "acme", "--ttl", "3d",
                 "--scope", "api:read", "--scope", "api:write")
    assert result.returncode == 0, result.stderr
    token = result.stdout.strip()
    assert WHOLE_TOKEN.fullmatch(token)
    assert token not in result.stderr
    return token


def test_issue_rejects_a_bad_ttl(db_url):
    result = run(db_url, "issue", "--user", "u", "--tenant", "t", "--ttl", "soon")
    assert result.returncode == 2
    assert "not a duration" in result.stderr


def test_validate_exit_codes_and_scope(db_url, near_token):
    assert run(db_url, "validate", near_token, "--scope", "api:write").returncode == 0
    denied = run(db_url, "validate", near_token, "--scope", "api:admin")
    assert denied.returncode == 1
    assert "Token lacks the required scope" in denied.stdout
    assert run(db_url, "validate", "ovt_prod_nope").returncode == 1


def test_status_reads_the_token_from_stdin(db_url, near_token):
    result = run(db_url, "status", "-", stdin=near_token + "\n")
    assert result.returncode == 0, result.stderr
    assert "EXPIRING_SOON" in result.stdout
    assert not WHOLE_TOKEN.search(result.stdout)


def test_diagnose_prints_the_steps_and_changes_nothing(db_url, near_token):
    result = run(db_url, "diagnose", "-", stdin=near_token)
    assert result.returncode == 0, result.stdout
    for step in ("FORMAT", "LOOKUP", "REFRESH_DRY_RUN", "SECURITY"):
        assert step in result.stdout
    assert not WHOLE_TOKEN.search(result.stdout + result.stderr)
    status = run(db_url, "status", near_token)
    assert re.search(r"has_successor\s*│\s*False", status.stdout), "the dry run rotated nothing"


def test_diagnose_exits_non_zero_when_a_step_fails(db_url):
    result = run(db_url, "diagnose", "not-a-token")
    assert result.returncode == 1
    assert "FAIL" in result.stdout


def test_diagnose_shows_nothing_of_an_input_that_is_not_a_token(db_url, near_token):
    for bad in ("zq-Not-A-Token-42", near_token.upper(), near_token[:-1] + "Z"):
        result = run(db_url, "diagnose", "-", stdin=bad + "\n")
        assert result.returncode == 1
        shown = re.sub(r"\s|│", "", result.stdout + result.stderr)
        assert "token_prefix=(notatoken)…" in shown, result.stdout
        assert bad[:13] not in shown and bad[9:13] not in shown, result.stdout


def test_refresh_prints_the_new_token_once_then_revoke(db_url, near_token):
    first = run(db_url, "refresh", "-", stdin=near_token)
    assert first.returncode == 0, first.stderr
    new = first.stdout.strip()
    assert WHOLE_TOKEN.fullmatch(new) and new != near_token
    assert "EXPIRING_SOON" in first.stderr
    again = run(db_url, "refresh", near_token)
    assert again.stdout.strip() == new and "ALREADY_REFRESHED" in again.stderr
    assert run(db_url, "revoke", "-", stdin=new).returncode == 0
    assert run(db_url, "revoke", new).returncode == 1
    assert run(db_url, "validate", near_token).returncode == 1


def test_demo_against_a_database_tells_the_default_story_without_whole_tokens(db_url):
    result = run(db_url, "demo", "--database", db_url)
    assert result.returncode == 0, result.stderr
    text = result.stdout
    assert "reuse action REVOKE_FAMILY (the default)" in text
    assert "old token: valid, reason EXPIRING_SOON" in text
    assert "same successor handed out again: yes" in text
    assert "old token, inside its grace window: valid" in text
    # The default reuse action: replaying A after its grace revokes B as well.
    assert "old token: refused, reason REUSE_DETECTED" in text
    assert "the legitimate successor B, revoked with its family: refused" in text
    # X-Token-Expires exactly as the ASGI middleware sends it (RFC 3339, ms, Z).
    assert re.search(r"X-Token-Expires: \d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z\n", text)
    # The batch job extends the idle API key.
    assert re.search(r"refresh_expiring_tokens_batch\(\): \d+ due, [1-9]\d* extended", text)
    assert "REFRESH_DRY_RUN" in text
    assert not WHOLE_TOKEN.search(text + result.stderr)
    # Every token shown is introduced first: its first mention says which token it is.
    for prefix in dict.fromkeys(re.findall(r"ovt_prod_[0-9a-f]{4}…", text)):
        first = next(line for line in text.splitlines() if prefix in line)
        assert re.match(r"  token [A-C] is ", first), first


def test_demo_restores_the_policy(db_url):
    import psycopg

    with psycopg.connect(db_url, autocommit=True) as conn:
        policy = conn.execute("SELECT grace_period, reuse_action FROM auth.token_refresh_policy"
                              " WHERE token_type = 'API'").fetchone()
    assert str(policy[0]) == "0:01:00" and policy[1] == "REVOKE_FAMILY"
