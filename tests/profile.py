"""The test profile: QUICK by default, SOAK (larger counts) under ``PYVAULT_SOAK=1``.

``make soak`` sets it; any value but empty or ``0`` selects SOAK.
"""

from __future__ import annotations

import os

SOAK = os.environ.get("PYVAULT_SOAK", "").strip() not in ("", "0")


def profile(quick, soak):
    """The QUICK value, or the SOAK value under PYVAULT_SOAK=1."""
    return soak if SOAK else quick
