"""Waiting on something a real process or server must do: poll with a deadline.

A fixed sleep either waits too long or, on a loaded machine, not long enough; where the
database's own clock is what matters, use ``tests.advance_clock`` instead of waiting.
"""

from __future__ import annotations

import time
from collections.abc import Callable


def wait_for(predicate: Callable[[], object], timeout: float = 20.0, what: str = "condition",
             interval: float = 0.1) -> None:
    """Poll ``predicate`` until it is true; fail with ``what`` once ``timeout`` has passed."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(interval)
