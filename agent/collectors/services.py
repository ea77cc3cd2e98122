"""services: failed systemd units (where systemd is the init system)."""

from __future__ import annotations

from typing import Any, Final

from agent.collectors._common import Context, clip, run, systemd_running, unavailable, which

MAX_UNITS: Final = 20
COMMAND_TIMEOUT: Final = 2.5


def collect(ctx: Context) -> dict[str, Any]:
    if not systemd_running() or which("systemctl") is None:
        return unavailable("systemd is not the service manager here", failed=[], failed_count=0)
    text = run(
        [
            "systemctl",
            "list-units",
            "--state=failed",
            "--all",
            "--no-legend",
            "--plain",
            "--no-pager",
            "--full",
        ],
        COMMAND_TIMEOUT,
    )
    units = parse_failed_units(text)
    return {
        "available": True,
        "manager": "systemd",
        "failed_count": len(units),
        "failed": units[:MAX_UNITS],
    }


def parse_failed_units(text: str) -> list[dict[str, Any]]:
    """``systemctl list-units --plain --no-legend`` lines: unit load active sub description."""
    units: list[dict[str, Any]] = []
    for line in text.splitlines():
        cols = line.lstrip("● ").split(None, 4)
        if len(cols) < 4:
            continue
        units.append(
            {
                "unit": clip(cols[0]),
                "load": cols[1],
                "active": cols[2],
                "sub": cols[3],
                "description": clip(cols[4]) if len(cols) > 4 else "",
            }
        )
    return units
