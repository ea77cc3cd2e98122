"""What the collectors share: the snapshot context, bounded commands, small readers.

The context carries what one snapshot knows (the controller's address, the name to look
up, the sampling window) and computes the process table once for the collectors that
need it, under a lock, since collectors run in parallel threads.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

#: How long CPU use (per core and per process) is sampled; the snapshot's floor.
WINDOW_SECONDS: Final = 0.05
MAX_TEXT: Final = 256
#: What a command may print before we stop reading it.
MAX_COMMAND_OUTPUT: Final = 512 * 1024

_PROCESS_ATTRS: Final = ["pid", "name", "ppid", "status", "memory_info", "cpu_times"]


class CollectorError(Exception):
    """A collector could not produce its section; the message says why, for people."""


@dataclass
class ProcessTable:
    """One pass over the processes plus each one's CPU use over the sampling window."""

    procs: list[Any]
    cpu_percent: dict[int, float]
    window_ms: float

    def by_pid(self) -> dict[int, Any]:
        return {int(proc.pid): proc for proc in self.procs}


@dataclass
class Context:
    """What one snapshot shares between its collectors."""

    controller_url: str | None = None
    resolve_name: str | None = None
    window: float = WINDOW_SECONDS
    started: float = field(default_factory=time.monotonic)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _table: ProcessTable | None = field(default=None, repr=False)

    def wait_window(self) -> None:
        """Sleep until the sampling window that began with the snapshot is over."""
        left = self.started + self.window - time.monotonic()
        if left > 0:
            time.sleep(left)

    def process_table(self) -> ProcessTable:
        """The process table, sampled once per snapshot whoever asks first."""
        with self._lock:
            if self._table is None:
                self._table = _sample_processes(self)
            return self._table


def _sample_processes(ctx: Context) -> ProcessTable:
    import psutil

    # ad_value=None: a field we may not read becomes None; process_iter itself skips
    # processes that vanish while we look at them.
    began = time.monotonic()
    procs = list(psutil.process_iter(_PROCESS_ATTRS, ad_value=None))
    # psutil keeps every Process it made for the next call; we want nothing kept.
    clear = getattr(psutil.process_iter, "cache_clear", None)  # psutil ≥ 6
    if clear is not None:
        clear()
    else:
        getattr(psutil, "_pmap", {}).clear()
    read = time.monotonic()
    first = (began + read) / 2  # each process was read somewhere in between
    ctx.wait_window()
    # Per-process CPU counters tick at 10 ms on Linux: never sample less than half a window.
    left = read + ctx.window / 2 - time.monotonic()
    if left > 0:
        time.sleep(left)
    second = time.monotonic()
    before = {int(proc.pid): cpu_seconds(proc.info.get("cpu_times")) for proc in procs}
    cpu_percent: dict[int, float] = {}
    for proc in procs:
        try:
            times = proc.cpu_times()
        except (psutil.Error, OSError):
            continue
        start = before.get(int(proc.pid), -1.0)
        if start >= 0:
            cpu_percent[int(proc.pid)] = cpu_seconds(times) - start
    elapsed = (second + time.monotonic()) / 2 - first
    for pid, spent in cpu_percent.items():
        cpu_percent[pid] = round(max(0.0, spent) / elapsed * 100, 1) if elapsed > 0 else 0.0
    return ProcessTable(procs, cpu_percent, round(elapsed * 1000, 1))


def cpu_seconds(times: Any) -> float:
    """user + system seconds of a psutil cpu_times tuple, or -1 when unknown."""
    return float(times.user + times.system) if times is not None else -1.0


# -- small helpers ----------------------------------------------------------------------


def clip(text: str, limit: int = MAX_TEXT) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def iso(timestamp: float, timespec: str = "seconds") -> str:
    return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec=timespec)


def unavailable(reason: str, **extra: Any) -> dict[str, Any]:
    """A section for something this machine does not have: data, not an error."""
    return {"available": False, "reason": reason, **extra}


def opt_int(value: Any) -> int | None:
    return int(value) if value is not None else None


def read_text(path: str | Path, limit: int = 64 * 1024) -> str | None:
    """A small text file, or None if it is not there or not readable."""
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            return handle.read(limit)
    except OSError:
        return None


def is_linux() -> bool:
    return sys.platform.startswith("linux")


def systemd_running() -> bool:
    """True when systemd is the init system (its runtime directory exists)."""
    return os.path.isdir("/run/systemd/system")


def which(name: str) -> str | None:
    return shutil.which(name)


def run(argv: list[str], timeout: float, *, ok_codes: tuple[int, ...] = (0,)) -> str:
    """Run a program (argv, never a shell) in the C locale; its output, bounded.

    A program that is missing, too slow or fails raises :class:`CollectorError` with a
    message a technician can read.
    """
    env = {**os.environ, "LC_ALL": "C", "LANG": "C", "SYSTEMD_COLORS": "0", "PAGER": "cat"}
    try:
        done = subprocess.run(
            argv,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=timeout,
            env=env,
            check=False,
        )
    except FileNotFoundError:
        raise CollectorError(f"{argv[0]} is not installed") from None
    except subprocess.TimeoutExpired:
        raise CollectorError(f"{argv[0]} did not finish within {timeout:g} s") from None
    except OSError as exc:
        raise CollectorError(f"cannot run {argv[0]}: {exc.strerror or exc}") from None
    if done.returncode not in ok_codes:
        reason = done.stderr.decode("utf-8", "replace").strip().splitlines()
        detail = clip(reason[-1]) if reason else "no message"
        raise CollectorError(f"{argv[0]} exited {done.returncode}: {detail}")
    return done.stdout[:MAX_COMMAND_OUTPUT].decode("utf-8", "replace")


def pressure(resource: str) -> dict[str, Any] | None:
    """Linux pressure stall information (PSI) for cpu, memory or io, or None.

    ``some`` is the share of time at least one task waited for the resource, ``full``
    the share all did, as 10 s, 60 s and 300 s averages in percent.
    """
    text = read_text(f"/proc/pressure/{resource}")
    if not text:
        return None
    result: dict[str, Any] = {}
    for line in text.splitlines():
        kind, _, rest = line.partition(" ")
        values: dict[str, float] = {}
        for pair in rest.split():
            key, _, value = pair.partition("=")
            if key in ("avg10", "avg60", "avg300"):
                try:
                    values[key] = float(value)
                except ValueError:
                    continue
        if kind in ("some", "full") and values:
            result[kind] = values
    return result or None
