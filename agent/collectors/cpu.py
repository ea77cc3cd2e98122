"""cpu: cores, load averages, use per core and by kind over the window, top consumers."""

from __future__ import annotations

import os
import time
from typing import Any, Final

from agent.collectors._common import Context, clip, opt_int, pressure

MAX_CORES: Final = 256
TOP: Final = 5


def collect(ctx: Context) -> dict[str, Any]:
    import psutil

    first = psutil.cpu_times(percpu=True)
    began = time.monotonic()
    table = ctx.process_table()  # waits out the sampling window
    left = began + ctx.window / 2 - time.monotonic()
    if left > 0:  # the table was ready before our window was long enough
        time.sleep(left)
    second = psutil.cpu_times(percpu=True)
    per_core = [_busy_percent(a, b) for a, b in zip(first, second, strict=False)]
    breakdown = _breakdown(first, second)
    load: list[float] | None = None
    # os.getloadavg only: psutil emulates it on Windows with a background thread.
    if hasattr(os, "getloadavg"):
        try:
            load = [round(value, 2) for value in os.getloadavg()]
        except OSError:
            load = None
    logical = opt_int(psutil.cpu_count(logical=True))
    by_pid = table.by_pid()
    ranked = sorted(table.cpu_percent.items(), key=lambda item: item[1], reverse=True)[:TOP]
    return {
        "logical": logical,
        "physical": opt_int(psutil.cpu_count(logical=False)),
        "percent": round(sum(per_core) / len(per_core), 1) if per_core else None,
        "per_core": per_core[:MAX_CORES],
        "times_percent": breakdown,
        "load_avg": load,
        "pressure": pressure("cpu"),
        "top": [
            {
                "pid": pid,
                "name": clip(str(by_pid[pid].info.get("name") or "?")),
                "percent": percent,
            }
            for pid, percent in ranked
            if percent > 0 and pid in by_pid
        ],
        "sample_ms": table.window_ms,
    }


def _total(times: Any) -> float:
    # guest time is already counted in user time on Linux
    return float(sum(times)) - getattr(times, "guest", 0.0) - getattr(times, "guest_nice", 0.0)


def _busy_percent(before: Any, after: Any) -> float:
    total = _total(after) - _total(before)
    if total <= 0:
        return 0.0
    idle = float(after.idle - before.idle) + float(
        getattr(after, "iowait", 0.0) - getattr(before, "iowait", 0.0)
    )
    return round(min(100.0, max(0.0, (total - idle) / total * 100)), 1)


def _breakdown(first: list[Any], second: list[Any]) -> dict[str, float] | None:
    """Where the time went over the window, summed over cores: user, system, iowait…"""
    if not first or not second:
        return None
    fields = [f for f in ("user", "system", "iowait", "steal", "idle") if hasattr(first[0], f)]
    total = sum(_total(b) - _total(a) for a, b in zip(first, second, strict=False))
    if total <= 0:
        return None
    return {
        f: round(
            sum(getattr(b, f) - getattr(a, f) for a, b in zip(first, second, strict=False))
            / total
            * 100,
            1,
        )
        for f in fields
    }
