"""battery: charge, power source, and wear (today's full capacity against the design)."""

from __future__ import annotations

import glob
import os
from typing import Any, Final

from agent.collectors._common import Context, clip, is_linux, read_text, unavailable

MAX_BATTERIES: Final = 4


def collect(ctx: Context) -> dict[str, Any]:
    import psutil

    sensor = getattr(psutil, "sensors_battery", None)
    battery = sensor() if sensor is not None else None
    packs = linux_batteries() if is_linux() else []
    if battery is None and not packs:
        return unavailable("no battery")
    result: dict[str, Any] = {"available": True, "batteries": packs}
    if battery is not None:
        secs = battery.secsleft
        result.update(
            {
                "percent": round(float(battery.percent), 1),
                "plugged": battery.power_plugged,
                # psutil's sentinels for "charging" and "unknown" are negative enums
                "seconds_left": int(secs) if isinstance(secs, int | float) and secs >= 0 else None,
            }
        )
    healths = [p["health_percent"] for p in packs if p.get("health_percent") is not None]
    result["health_percent"] = min(healths) if healths else None
    return result


def linux_batteries(root: str = "/sys/class/power_supply") -> list[dict[str, Any]]:
    """Each battery's capacity now and by design, from sysfs (energy in µWh or charge in µAh)."""
    packs: list[dict[str, Any]] = []
    for path in sorted(glob.glob(os.path.join(root, "*")))[:16]:
        if (read_text(os.path.join(path, "type")) or "").strip() != "Battery":
            continue
        full = _number(path, "energy_full") or _number(path, "charge_full")
        design = _number(path, "energy_full_design") or _number(path, "charge_full_design")
        health = round(full / design * 100, 1) if full and design else None
        packs.append(
            {
                "name": clip(os.path.basename(path), 32),
                "status": clip((read_text(os.path.join(path, "status")) or "").strip() or "?", 32),
                "health_percent": health,
                "cycle_count": _number(path, "cycle_count"),
                "model": clip((read_text(os.path.join(path, "model_name")) or "").strip(), 64)
                or None,
            }
        )
        if len(packs) >= MAX_BATTERIES:
            break
    return packs


def _number(path: str, name: str) -> int | None:
    text = read_text(os.path.join(path, name), 64)
    try:
        return int(text.strip()) if text else None
    except ValueError:
        return None
