"""One diagnostics snapshot of the customer's machine: run the collectors, bound the result.

The collectors themselves live in :mod:`agent.collectors`, one module each, imported only
when a snapshot asks for them (psutil included), so an idle agent never pays for them.
This module owns how a snapshot is taken:

- every selected collector runs in its own daemon thread, all at once, so the ones that
  wait (DNS, a TCP probe, ``systemctl``, ``journalctl``, the package manager) overlap;
- each has its own time limit; a collector that fails or runs out of time becomes a line
  under ``errors`` ("network: timed out after 3 s") and never stops the others, and a
  thread that overruns is left to finish on its own (it can hold nothing we wait for);
- every section is then bounded (strings clipped, lists capped, at most
  :data:`MAX_SECTION_BYTES` of JSON) and **redacted** (:mod:`agent.collectors.redact`), so
  nothing that looks like a secret leaves the machine, whatever a collector picked up;
- the agent's memory goes back to about where it was (see :func:`_malloc`): a dozen
  short-lived threads would otherwise leave glibc arenas and freed pages behind.
"""

from __future__ import annotations

import json
import math
import os
import sys
import threading
import time
from collections.abc import Sequence
from typing import Any, Final

from agent.collectors import Collect, load
from agent.collectors._common import Context, clip, iso
from protocol.collectors import CATALOGUE, COLLECTORS, canonical

__all__ = ["COLLECTORS", "collect_snapshot"]

SCHEMA: Final = 2
MAX_TEXT: Final = 1024
MAX_ITEMS: Final = 256
MAX_DEPTH: Final = 8
MAX_ERROR: Final = 500
MAX_SECTION_BYTES: Final = 64 * 1024

#: Collector functions by name; filled on first use (tests put their own in).
_REGISTRY: dict[str, Collect] = {}
#: Time limits by name, in seconds (tests shorten them).
TIMEOUTS: dict[str, float] = {name: spec.timeout for name, spec in CATALOGUE.items()}


class _Run:
    """One collector in its own daemon thread, and what it produced."""

    def __init__(self, name: str, collect: Collect, ctx: Context) -> None:
        self.name = name
        self.value: dict[str, Any] | None = None
        self.error: BaseException | None = None
        self.elapsed_ms: float | None = None
        self.thread = threading.Thread(
            target=self._run, args=(collect, ctx), name=f"diag-{name}", daemon=True
        )

    def _run(self, collect: Collect, ctx: Context) -> None:
        began = time.perf_counter()
        try:
            self.value = collect(ctx)
        except BaseException as exc:  # reported as data; the agent must not notice
            self.error = exc
        self.elapsed_ms = round((time.perf_counter() - began) * 1000, 1)


def collect_snapshot(
    collectors: Sequence[str] | None = None,
    *,
    controller_url: str | None = None,
    resolve: str | None = None,
) -> dict[str, Any]:
    """Take one snapshot with the given collectors (names or aliases; all by default).

    ``controller_url`` lets the network collector probe the controller on a fresh
    connection; ``resolve`` is the name it looks up (default: HELPLINE_DIAG_RESOLVE, the
    controller's host name, or example.com).
    """
    selected = COLLECTORS if collectors is None else canonical(collectors)
    malloc = _malloc()
    started = time.perf_counter()
    ctx = Context(controller_url=controller_url, resolve_name=resolve)
    runs = [_Run(name, _collector(name), ctx) for name in selected]
    for run in runs:
        run.thread.start()
    snapshot: dict[str, Any] = {
        "schema": SCHEMA,
        "taken_at": iso(time.time(), "milliseconds"),
        "collectors": list(selected),
    }
    errors: dict[str, str] = {}
    timings: dict[str, float] = {}
    for run in runs:
        limit = TIMEOUTS.get(run.name, 2.0)
        run.thread.join(max(0.0, started + limit - time.perf_counter()))
        if run.thread.is_alive():
            errors[run.name] = f"timed out after {limit:g} s"
            continue
        timings[run.name] = run.elapsed_ms or 0.0
        if run.error is not None:
            errors[run.name] = _error_text(run.error)
            continue
        section = bound(run.value)
        size = len(json.dumps(section, separators=(",", ":")))
        if size > MAX_SECTION_BYTES:
            errors[run.name] = f"output of {size} bytes exceeds the {MAX_SECTION_BYTES} limit"
            continue
        snapshot[run.name] = section
    snapshot["duration_ms"] = round((time.perf_counter() - started) * 1000, 1)
    snapshot["timings_ms"] = timings
    snapshot["errors"] = errors
    if malloc is not None:
        malloc.malloc_trim(0)  # hand the pages the collectors freed back to the OS
    return snapshot


_M_ARENA_MAX: Final = -8
_libc: Any = None


def _malloc() -> Any:
    """glibc, set up for short-lived collector threads; None elsewhere.

    By default glibc gives each new thread that allocates its own arena (up to eight per
    core) and keeps what it freed, which an idle agent would carry for good after one
    snapshot. Two arenas are plenty for a process that is idle between snapshots, and
    ``malloc_trim`` after each one returns the freed pages. Measured in
    ``bench/diag_snapshot.py``.
    """
    global _libc
    if not sys.platform.startswith("linux"):
        return None
    if _libc is None:
        import ctypes

        try:
            if not (os.confstr("CS_GNU_LIBC_VERSION") or "").startswith("glibc"):
                raise OSError("not glibc")
            libc = ctypes.CDLL(None)
            libc.mallopt(_M_ARENA_MAX, 2)
            _libc = libc
        except (OSError, ValueError, AttributeError):  # musl, no confstr name, no symbol
            _libc = False
    return _libc or None


def _collector(name: str) -> Collect:
    found = _REGISTRY.get(name)
    if found is None:
        found = _REGISTRY[name] = load(name)
    return found


def _error_text(exc: BaseException) -> str:
    from agent.collectors._common import CollectorError
    from agent.collectors.redact import redact

    text = str(exc) if isinstance(exc, CollectorError) else f"{type(exc).__name__}: {exc}"
    return clip(redact(text), MAX_ERROR)


def bound(value: Any, depth: int = 0) -> Any:
    """A JSON-safe copy of ``value``: strings redacted and clipped, lists and maps capped."""
    from agent.collectors.redact import redact

    if value is None or isinstance(value, bool | int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, str):
        return clip(redact(value), MAX_TEXT)
    if depth >= MAX_DEPTH:
        return clip(redact(str(value)), MAX_TEXT)
    if isinstance(value, dict):
        return {
            clip(redact(str(key)), 128): bound(item, depth + 1)
            for key, item in list(value.items())[:MAX_ITEMS]
        }
    if isinstance(value, list | tuple):
        return [bound(item, depth + 1) for item in value[:MAX_ITEMS]]
    return clip(redact(str(value)), MAX_TEXT)


if __name__ == "__main__":  # pragma: no cover - a quick look by hand
    names = sys.argv[1].split(",") if len(sys.argv) > 1 else None
    url = os.environ.get("HELPLINE_DIAG_CONTROLLER")
    json.dump(collect_snapshot(names, controller_url=url), sys.stdout, indent=2)
    print()
