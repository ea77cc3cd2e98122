"""packages: pending updates, from apt or dnf, without touching the network.

Asking the package manager is slow (``apt list --upgradable`` rebuilds its cache: about
half a second here, seconds on a big system) while its answer changes only when the
package database or the package lists change. So the answer is kept in memory, keyed by
the modification times of exactly those files, and reused until one of them changes.

A check that takes longer than :data:`WAIT_SECONDS` carries on in the background and the
snapshot says so (``checking: true``); the next snapshot gets the answer. One check runs
at a time.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import Any, Final

from agent.collectors._common import CollectorError, Context, clip, run, unavailable, which

WAIT_SECONDS: Final = 1.0
CHECK_TIMEOUT: Final = 120.0
MAX_NAMES: Final = 30

_APT_INPUTS: Final = (
    "/var/lib/dpkg/status",
    "/var/lib/apt/lists",
    "/var/cache/apt/pkgcache.bin",
    "/etc/apt/sources.list",
    "/etc/apt/sources.list.d",
)
_DNF_INPUTS: Final = ("/var/lib/rpm", "/var/cache/dnf", "/etc/yum.repos.d")

_lock = threading.Lock()
_cache: dict[str, Any] = {}  # key → answer (one entry: the latest)
_running: threading.Event | None = None
_failure: str | None = None


def collect(ctx: Context) -> dict[str, Any]:
    global _running
    manager = _manager()
    if manager is None:
        return unavailable("no apt or dnf here")
    name, inputs, check = manager
    key = f"{name}:{_stamp(inputs)}"
    with _lock:
        if key in _cache:
            return {**_cache[key], "cached": True}
        done = _running
        if done is None:
            done = _running = threading.Event()
            threading.Thread(
                target=_refresh, args=(key, check, done), name="diag-packages", daemon=True
            ).start()
    if done.wait(WAIT_SECONDS):
        with _lock:
            if key in _cache:
                return {**_cache[key], "cached": False}
            if _failure is not None:
                raise CollectorError(_failure)
    return {
        "available": True,
        "manager": name,
        "checking": True,
        "pending": None,
        "note": f"{name} takes longer than {WAIT_SECONDS:g} s here; the check goes on in the "
        "background and the next snapshot will have its answer",
    }


def _refresh(key: str, check: Callable[[], dict[str, Any]], done: threading.Event) -> None:
    global _running, _failure
    try:
        answer = check()
        failure = None
    except CollectorError as exc:
        answer, failure = None, str(exc)
    except Exception as exc:  # a daemon thread must not die silently with the lock state
        answer, failure = None, f"{type(exc).__name__}: {exc}"
    with _lock:
        _cache.clear()
        if answer is not None:
            _cache[key] = answer
        _failure = failure
        _running = None
    done.set()


def _manager() -> tuple[str, tuple[str, ...], Callable[[], dict[str, Any]]] | None:
    if which("apt") and os.path.exists("/var/lib/dpkg/status"):
        return "apt", _APT_INPUTS, _apt
    if which("dnf"):
        return "dnf", _DNF_INPUTS, _dnf
    return None


def _stamp(paths: tuple[str, ...]) -> str:
    """The inputs' modification times: the cache key. apt replaces list files by renaming,
    which changes their directory's time too."""
    stamps = []
    for path in paths:
        try:
            stamps.append(str(os.stat(path).st_mtime_ns))
        except OSError:
            stamps.append("-")
    return ",".join(stamps)


def _apt() -> dict[str, Any]:
    return {
        "available": True,
        "manager": "apt",
        **parse_apt(run(["apt", "list", "--upgradable"], CHECK_TIMEOUT)),
    }


def parse_apt(text: str) -> dict[str, Any]:
    """``apt list --upgradable``: ``name/suite,suite version arch [upgradable from: old]``."""
    names: list[str] = []
    security: list[str] = []
    for line in text.splitlines():
        if "/" not in line or "upgradable from" not in line:
            continue
        name, _, rest = line.partition("/")
        suites = rest.split(" ", 1)[0]
        names.append(clip(name, 100))
        if "security" in suites:
            security.append(clip(name, 100))
    return {
        "checking": False,
        "pending": len(names),
        "security": len(security),
        "names": names[:MAX_NAMES],
        "security_names": security[:MAX_NAMES],
    }


def _dnf() -> dict[str, Any]:  # pragma: no cover - no dnf on the test machine
    # -C: from the cache only; check-update exits 100 when updates are pending
    text = run(["dnf", "-q", "-C", "check-update"], CHECK_TIMEOUT, ok_codes=(0, 100))
    return {"available": True, "manager": "dnf", **parse_dnf(text)}


def parse_dnf(text: str) -> dict[str, Any]:
    """``dnf check-update``: ``name.arch  version  repository`` lines."""
    names: list[str] = []
    security: list[str] = []
    for line in text.splitlines():
        cols = line.split()
        if len(cols) != 3 or "." not in cols[0] or line.startswith((" ", "Obsoleting")):
            continue
        name = cols[0].rsplit(".", 1)[0]
        names.append(clip(name, 100))
        if "security" in cols[2].lower():
            security.append(clip(name, 100))
    return {
        "checking": False,
        "pending": len(names),
        "security": len(security) if security else None,
        "names": names[:MAX_NAMES],
        "security_names": security[:MAX_NAMES],
    }
