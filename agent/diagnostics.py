"""One diagnostics snapshot of the customer's machine, taken with psutil.

Each collector fills one section of the snapshot and runs on its own: a collector that
fails is reported under ``errors`` and never stops the others. Every list is capped and
every string clipped, so a snapshot stays far below the agent's frame limit whatever the
machine looks like. psutil is imported inside the collectors so that an idle agent that
never takes a snapshot never pays for it.
"""

from __future__ import annotations

import heapq
import os
import platform
import socket
import sys
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any, Final

#: The collectors, in the order their sections appear in a snapshot.
COLLECTORS: Final[tuple[str, ...]] = ("system", "cpu", "memory", "disks", "processes")

#: How long the CPU load is sampled; the snapshot's duration is dominated by it.
CPU_SAMPLE_SECONDS: Final = 0.05
MAX_CORES: Final = 256
MAX_PARTITIONS: Final = 50
TOP_PROCESSES: Final = 5
MAX_TEXT: Final = 256
MAX_ERROR: Final = 500

_PROCESS_ATTRS: Final = ["pid", "name", "memory_info", "cpu_times", "status"]


def collect_snapshot(collectors: Sequence[str] | None = None) -> dict[str, Any]:
    """Take one snapshot with the given collectors (all of them by default)."""
    selected = _select(collectors)
    started = time.perf_counter()
    snapshot: dict[str, Any] = {"taken_at": _iso(time.time(), "milliseconds")}
    errors: dict[str, str] = {}
    for name in selected:
        try:
            snapshot[name] = _REGISTRY[name]()
        except Exception as exc:  # one broken collector must not cost the others
            errors[name] = _clip(f"{type(exc).__name__}: {exc}", MAX_ERROR)
    snapshot["duration_ms"] = round((time.perf_counter() - started) * 1000, 1)
    snapshot["errors"] = errors
    return snapshot


def _select(collectors: Sequence[str] | None) -> tuple[str, ...]:
    """Validate a selection and return it in snapshot order, without duplicates."""
    if collectors is None:
        return COLLECTORS
    if isinstance(collectors, str):
        raise TypeError(f"collectors must be a sequence of names, e.g. ({collectors!r},)")
    unknown = sorted(set(collectors) - set(COLLECTORS))
    if unknown:
        raise ValueError(
            f"unknown collector(s): {', '.join(unknown)}; valid: {', '.join(COLLECTORS)}"
        )
    return tuple(name for name in COLLECTORS if name in collectors)


# -- collectors --------------------------------------------------------------------------


def _system() -> dict[str, Any]:
    import psutil

    boot = float(psutil.boot_time())
    users = psutil.users()
    return {
        "os": platform.system(),
        "os_release": _os_release(),
        "os_version": _clip(platform.version()),
        "platform": _clip(platform.platform()),
        "hostname": _clip(socket.gethostname()),
        "kernel": _clip(platform.release()),
        "architecture": platform.machine(),
        "python": platform.python_version(),
        "boot_time": _iso(boot, "seconds"),
        "uptime_seconds": max(0, int(time.time() - boot)),
        "users": len({str(user.name) for user in users}),
        "user_sessions": len(users),
    }


def _os_release() -> str:
    """The distribution or product name people recognise, e.g. "Debian GNU/Linux 12"."""
    system = platform.system()
    if system == "Linux":
        try:
            info = platform.freedesktop_os_release()
        except OSError:
            return _clip(platform.release())
        return _clip(info.get("PRETTY_NAME") or info.get("NAME") or "Linux")
    if system == "Darwin":
        return f"macOS {platform.mac_ver()[0]}".strip()
    if system == "Windows":
        release, version, _, _ = platform.win32_ver()
        parts = ("Windows", release, platform.win32_edition() or "", f"({version})")
        return _clip(" ".join(part for part in parts if part))
    return _clip(platform.release())


def _cpu() -> dict[str, Any]:
    import psutil

    # One sample of the per-core figures; the overall figure is their mean, which is
    # what psutil computes too, so the sample is taken once rather than twice.
    per_core = [float(p) for p in psutil.cpu_percent(interval=CPU_SAMPLE_SECONDS, percpu=True)]
    percent = round(sum(per_core) / len(per_core), 1) if per_core else None
    load: list[float] | None = None
    # os.getloadavg only: psutil emulates it on Windows with a background thread.
    if hasattr(os, "getloadavg"):
        try:
            load = [round(value, 2) for value in os.getloadavg()]
        except OSError:
            load = None
    return {
        "logical": _opt_int(psutil.cpu_count(logical=True)),
        "physical": _opt_int(psutil.cpu_count(logical=False)),
        "percent": percent,
        "per_core": per_core[:MAX_CORES],
        "load_avg": load,
        "sample_ms": round(CPU_SAMPLE_SECONDS * 1000),
    }


def _memory() -> dict[str, Any]:
    import psutil

    vm = psutil.virtual_memory()
    swap = psutil.swap_memory()
    return {
        "total": int(vm.total),
        "available": int(vm.available),
        "used": int(vm.used),
        "percent": float(vm.percent),
        "swap": {"total": int(swap.total), "used": int(swap.used), "percent": float(swap.percent)},
    }


def _disks() -> dict[str, Any]:
    import psutil

    partitions: list[dict[str, Any]] = []
    skipped = 0
    all_partitions = psutil.disk_partitions(all=False)
    for part in all_partitions[:MAX_PARTITIONS]:
        try:
            usage = psutil.disk_usage(part.mountpoint)
        except OSError:  # PermissionError included: unreadable or vanished mounts
            skipped += 1
            continue
        partitions.append(
            {
                "mountpoint": _clip(str(part.mountpoint)),
                "device": _clip(str(part.device)),
                "fstype": _clip(str(part.fstype)),
                "total": int(usage.total),
                "used": int(usage.used),
                "free": int(usage.free),
                "percent": float(usage.percent),
            }
        )
    return {
        "partitions": partitions,
        "skipped": skipped,
        "truncated": len(all_partitions) > MAX_PARTITIONS,
    }


def _processes() -> dict[str, Any]:
    import psutil

    # ad_value=None: a field we may not read becomes None; process_iter itself skips
    # processes that vanish while we look at them.
    procs = list(psutil.process_iter(_PROCESS_ATTRS, ad_value=None))
    by_cpu = heapq.nlargest(TOP_PROCESSES, procs, key=_cpu_seconds)
    by_rss = heapq.nlargest(TOP_PROCESSES, procs, key=_rss)
    # The user name costs a lookup per process, so only the few shown get one.
    usernames: dict[int, str | None] = {}
    for proc in (*by_cpu, *by_rss):
        if proc.pid not in usernames:
            usernames[proc.pid] = _username(proc, psutil)
    return {
        "count": len(procs),
        "top_cpu": [_describe(proc, usernames) for proc in by_cpu],
        "top_memory": [_describe(proc, usernames) for proc in by_rss],
    }


def _cpu_seconds(proc: Any) -> float:
    times = proc.info.get("cpu_times")
    return float(times.user + times.system) if times is not None else -1.0


def _rss(proc: Any) -> int:
    mem = proc.info.get("memory_info")
    return int(mem.rss) if mem is not None else -1


def _username(proc: Any, psutil: Any) -> str | None:
    try:
        return _clip(str(proc.username()))
    except (psutil.Error, KeyError, OSError):  # gone, denied, or uid with no name
        return None


def _describe(proc: Any, usernames: dict[int, str | None]) -> dict[str, Any]:
    info = proc.info
    cpu = _cpu_seconds(proc)
    rss = _rss(proc)
    name = info.get("name")
    status = info.get("status")
    return {
        "pid": int(proc.pid),
        "name": _clip(str(name)) if name is not None else None,
        "username": usernames.get(proc.pid),
        "rss": rss if rss >= 0 else None,
        "cpu_seconds": round(cpu, 2) if cpu >= 0 else None,
        "status": str(status) if status is not None else None,
    }


_REGISTRY: Final[dict[str, Callable[[], dict[str, Any]]]] = {
    "system": _system,
    "cpu": _cpu,
    "memory": _memory,
    "disks": _disks,
    "processes": _processes,
}


# -- helpers -----------------------------------------------------------------------------


def _iso(timestamp: float, timespec: str) -> str:
    return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec=timespec)


def _clip(text: str, limit: int = MAX_TEXT) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _opt_int(value: Any) -> int | None:
    return int(value) if value is not None else None


if __name__ == "__main__":  # pragma: no cover - a quick look by hand
    import json

    json.dump(collect_snapshot(), sys.stdout, indent=2)
    print()
