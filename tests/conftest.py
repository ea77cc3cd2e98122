"""Shared test settings: timeouts scale with one variable for slow machines."""

from __future__ import annotations

import os

#: Multiply every wait in the tests; e.g. HELPLINE_TEST_TIMEOUT_SCALE=3 on a busy machine.
TIMEOUT_SCALE = float(os.environ.get("HELPLINE_TEST_TIMEOUT_SCALE", "1"))


def scaled(seconds: float) -> float:
    """A test wait, scaled."""
    return seconds * TIMEOUT_SCALE
