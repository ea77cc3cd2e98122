"""sensors: temperatures (with their high and critical marks) and fan speeds."""

from __future__ import annotations

from typing import Any, Final

from agent.collectors._common import Context, clip, unavailable

MAX_READINGS: Final = 32


def collect(ctx: Context) -> dict[str, Any]:
    import psutil

    read_temps = getattr(psutil, "sensors_temperatures", None)
    read_fans = getattr(psutil, "sensors_fans", None)
    if read_temps is None and read_fans is None:
        return unavailable("this platform exposes no sensors to psutil")
    temperatures: list[dict[str, Any]] = []
    for chip, readings in (read_temps() if read_temps else {}).items():
        for reading in readings:
            temperatures.append(
                {
                    "sensor": clip(str(chip), 64),
                    "label": clip(str(reading.label), 64) or None,
                    "current": _temp(reading.current),
                    "high": _temp(reading.high),
                    "critical": _temp(reading.critical),
                }
            )
    fans = [
        {
            "sensor": clip(str(chip), 64),
            "label": clip(str(fan.label), 64) or None,
            "rpm": fan.current,
        }
        for chip, entries in (read_fans() if read_fans else {}).items()
        for fan in entries
    ]
    if not temperatures and not fans:
        return unavailable("no temperature or fan sensors exposed")
    temperatures.sort(key=lambda row: row["current"] or 0.0, reverse=True)
    hottest = temperatures[0]["current"] if temperatures else None
    return {
        "available": True,
        "hottest": hottest,
        "temperatures": temperatures[:MAX_READINGS],
        "fans": fans[:MAX_READINGS],
    }


def _temp(value: Any) -> float | None:
    # drivers report 0 or absurd values for marks they do not have
    if not isinstance(value, int | float) or not 0 < value < 200:
        return None
    return round(float(value), 1)
