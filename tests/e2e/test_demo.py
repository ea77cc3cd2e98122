"""The README's first command runs `helpline demo`: it must work on a bare machine."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import scaled


def test_demo_runs_the_whole_journey() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "controller", "demo"],
        capture_output=True,
        text=True,
        timeout=scaled(120),
    )
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "session code for T-1" in out
    assert "customer agent joined with consent" in out
    assert "diagnostics from the customer's machine" in out
    assert "now holds 1 attachment" in out
