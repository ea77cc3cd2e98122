"""processes: count and states, top by CPU (over the window) and by memory, zombies.

Command lines are read only for the few processes shown, and redacted before they are
clipped: ``--password=…`` never reaches the snapshot.
"""

from __future__ import annotations

import heapq
from collections import Counter
from typing import Any, Final

from agent.collectors._common import Context, clip, cpu_seconds
from agent.collectors.redact import redact_argv

TOP: Final = 5
MAX_ZOMBIES: Final = 10
MAX_CMDLINE: Final = 300


def collect(ctx: Context) -> dict[str, Any]:
    import psutil

    table = ctx.process_table()
    procs = table.procs
    percent = table.cpu_percent
    by_cpu = heapq.nlargest(
        TOP, procs, key=lambda p: (percent.get(int(p.pid), -1.0), _cpu_seconds(p))
    )
    by_rss = heapq.nlargest(TOP, procs, key=_rss)
    statuses = Counter(str(p.info.get("status") or "unknown") for p in procs)
    zombies = [p for p in procs if p.info.get("status") == psutil.STATUS_ZOMBIE]
    by_pid = table.by_pid()
    # User names and command lines cost a lookup each, so only the few shown get them.
    details: dict[int, tuple[str | None, str | None]] = {}
    for proc in (*by_cpu, *by_rss):
        if int(proc.pid) not in details:
            details[int(proc.pid)] = (_username(proc, psutil), _cmdline(proc, psutil))
    return {
        "count": len(procs),
        "by_status": dict(statuses.most_common()),
        "zombie_count": len(zombies),
        "zombies": [_zombie(p, by_pid) for p in zombies[:MAX_ZOMBIES]],
        "top_cpu": [_describe(p, details, percent) for p in by_cpu],
        "top_memory": [_describe(p, details, percent) for p in by_rss],
        "sample_ms": table.window_ms,
    }


def _cpu_seconds(proc: Any) -> float:
    return cpu_seconds(proc.info.get("cpu_times"))


def _rss(proc: Any) -> int:
    mem = proc.info.get("memory_info")
    return int(mem.rss) if mem is not None else -1


def _username(proc: Any, psutil: Any) -> str | None:
    try:
        return clip(str(proc.username()))
    except (psutil.Error, KeyError, OSError):  # gone, denied, or uid with no name
        return None


def _cmdline(proc: Any, psutil: Any) -> str | None:
    try:
        argv = proc.cmdline()
    except (psutil.Error, OSError):
        return None
    if not argv:
        return None
    # whitespace folded after redaction, so a multi-line script given to -c stays one line
    return clip(" ".join(redact_argv([str(arg) for arg in argv]).split()), MAX_CMDLINE)


def _describe(
    proc: Any, details: dict[int, tuple[str | None, str | None]], percent: dict[int, float]
) -> dict[str, Any]:
    info = proc.info
    cpu = _cpu_seconds(proc)
    rss = _rss(proc)
    name = info.get("name")
    status = info.get("status")
    username, cmdline = details.get(int(proc.pid), (None, None))
    return {
        "pid": int(proc.pid),
        "name": clip(str(name)) if name is not None else None,
        "username": username,
        "cmdline": cmdline,
        "rss": rss if rss >= 0 else None,
        "cpu_percent": percent.get(int(proc.pid)),
        "cpu_seconds": round(cpu, 2) if cpu >= 0 else None,
        "status": str(status) if status is not None else None,
    }


def _zombie(proc: Any, by_pid: dict[int, Any]) -> dict[str, Any]:
    ppid = proc.info.get("ppid")
    parent = by_pid.get(int(ppid)) if ppid is not None else None
    parent_name = parent.info.get("name") if parent is not None else None
    return {
        "pid": int(proc.pid),
        "name": clip(str(proc.info.get("name") or "?")),
        "ppid": int(ppid) if ppid is not None else None,
        "parent": clip(str(parent_name)) if parent_name else None,
    }
