"""A durable token store for machine clients: one JSON file, mode 0600.

The refresher service and the httpx client helper both keep tokens here, so a token
refreshed by either is seen by the other. Every write is a read-modify-write under an
exclusive ``flock`` on a sibling lock file, then an atomic replace: the new content is
written to a temporary file (0600) in the same directory, fsynced, renamed over the
store, and the directory is fsynced. A crash leaves either the old or the new file.

The file is plain JSON, readable by other tools::

    {"version": 1, "tokens": {"billing": {"token": "ovt_prod_…", "expires_at": "…",
                                          "updated_at": "…"}}}
"""

from __future__ import annotations

import fcntl
import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pyvault_tokens.display import token_prefix

FORMAT_VERSION = 1


# One stored token as the file holds it: "token", "expires_at", "updated_at" (ISO text).
Entry = dict[str, Any]


class TokenStoreError(Exception):
    """The store file cannot be read or written. ``str()`` is one line: which file,
    what is wrong, what to do. It never shows a token."""


@dataclass(frozen=True)
class StoredToken:
    token: str
    expires_at: datetime | None = None
    updated_at: datetime | None = None

    def __repr__(self) -> str:  # never show a whole token
        return (f"StoredToken(token={token_prefix(self.token)!r}, "
                f"expires_at={self.expires_at!r})")


def _dt(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def _entry(e: Entry) -> StoredToken:
    return StoredToken(e["token"], _dt(e.get("expires_at")), _dt(e.get("updated_at")))


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


class TokenStore:
    """Named tokens in one file. Safe across threads and processes on one machine."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._lock_path = self.path.with_name(self.path.name + ".lock")

    # -- reading -------------------------------------------------------------
    def _load(self) -> dict[str, Entry]:
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return {}
        except OSError as exc:
            raise TokenStoreError(f"cannot read the token store {self.path} "
                                  f"({exc.strerror}): check the path and its permissions"
                                  ) from None
        try:
            data = json.loads(text)
            version, tokens = data.get("version"), data["tokens"]
            valid = isinstance(tokens, dict) and all(
                isinstance(e, dict) and isinstance(e.get("token"), str) for e in tokens.values())
        except (ValueError, AttributeError, KeyError, TypeError):
            valid = version = False
        if version != FORMAT_VERSION or not valid:
            # Never quote the file: it holds tokens.
            raise TokenStoreError(f"the token store {self.path} is corrupt or of an unknown "
                                  "version: restore it from a backup, or move it away and "
                                  "add the tokens again")
        checked: dict[str, Entry] = tokens
        return checked

    def get(self, name: str) -> StoredToken | None:
        entry = self._load().get(name)
        return None if entry is None else _entry(entry)

    def items(self) -> list[tuple[str, StoredToken]]:
        return [(name, _entry(e)) for name, e in sorted(self._load().items())]

    # -- writing -------------------------------------------------------------
    @contextmanager
    def _locked(self) -> Iterator[dict[str, Entry]]:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise TokenStoreError(f"cannot write the token store {self.path} "
                                  f"({exc.strerror}): choose a path in a writable directory"
                                  ) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            tokens = self._load()
            before = json.dumps(tokens, sort_keys=True)
            yield tokens
            if json.dumps(tokens, sort_keys=True) != before:
                self._write(tokens)
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def _write(self, tokens: dict[str, Entry]) -> None:
        try:
            self._replace(tokens)
        except OSError as exc:
            raise TokenStoreError(f"cannot write the token store {self.path} "
                                  f"({exc.strerror}): check the directory's permissions and "
                                  "free space") from None

    def _replace(self, tokens: dict[str, Entry]) -> None:
        payload = json.dumps({"version": FORMAT_VERSION, "tokens": tokens}, indent=2,
                             sort_keys=True).encode("utf-8")
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", dir=self.path.parent)
        try:
            os.fchmod(fd, 0o600)
            os.write(fd, payload)
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.replace(tmp, self.path)
        except BaseException:
            os.unlink(tmp)
            raise
        dir_fd = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    def put(self, name: str, token: str, expires_at: datetime | None = None) -> None:
        with self._locked() as tokens:
            tokens[name] = {"token": token, "expires_at": _iso(expires_at),
                            "updated_at": _iso(datetime.now(UTC))}

    def replace(self, name: str, old_token: str, new_token: str,
                expires_at: datetime | None = None) -> bool:
        """Store new_token under name only if name still holds old_token (compare and swap)."""
        with self._locked() as tokens:
            current = tokens.get(name)
            if current is None or current["token"] != old_token:
                return False
            tokens[name] = {"token": new_token, "expires_at": _iso(expires_at),
                            "updated_at": _iso(datetime.now(UTC))}
            return True

    def update_expiry(self, name: str, token: str, expires_at: datetime | None) -> bool:
        """Record a later expiry for the same secret (EXTEND policy)."""
        return self.replace(name, token, token, expires_at)

    def remove(self, name: str) -> bool:
        with self._locked() as tokens:
            return tokens.pop(name, None) is not None
