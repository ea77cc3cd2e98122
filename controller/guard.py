"""Defences against a hostile network: connections that never log in, floods, busy callers.

What this module owns, and where the server uses it:

- :class:`Limits`: every bound below, from the environment (documented in the README).
- :func:`source_key`: the unit limits count by: an IPv4 address, or an IPv6 ``/64``
  (one customer line holds a whole /64, so its addresses are one source).
- :class:`PreauthGate`: unauthenticated connections per source and in total; extras are
  refused with HTTP 503 in ``process_request``, before a websocket exists.
- :class:`AuditThrottle`: the first hostile event of a kind from a source is audited in
  full, later ones in the same interval become one summary row with a count.
- :class:`ResourceErrorFilter`: "Too many open files" and its kin are logged once per
  interval with a count, whichever library logs them (asyncio logs a failed ``accept``,
  the TLS layer a failed handshake).
- :func:`raise_open_files_limit`: the soft ``RLIMIT_NOFILE`` up to the hard one.
"""

from __future__ import annotations

import errno
import ipaddress
import logging
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger("helpline.controller")


def _env_number(name: str, default: float) -> float:
    text = os.environ.get(name)
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{name} must be a number (got {text!r})") from None
    if value <= 0:
        raise ValueError(f"{name} must be above 0 (got {text!r})")
    return value


@dataclass(frozen=True)
class Limits:
    """Bounds on what an unauthenticated or busy peer may hold (README: "Limits")."""

    #: a connection that has not joined, resumed or authenticated by then is closed
    login_timeout: float = 10.0
    #: unauthenticated connections from one source (IPv4 address or IPv6 /64)
    preauth_per_source: int = 256
    #: unauthenticated connections in total; at most half the open-files limit
    preauth_total: int = 4096
    #: calls in flight on one API connection, and for one user over all their connections
    calls_per_connection: int = 8
    calls_per_user: int = 16
    #: how often an aggregated audit row or a suppressed log line is written
    report_interval: float = 60.0

    @classmethod
    def from_env(cls, open_files: int | None = None) -> Limits:
        """The defaults, overridden by ``HELPLINE_LOGIN_TIMEOUT`` and friends."""
        total = int(_env_number("HELPLINE_PREAUTH_TOTAL", cls.preauth_total))
        if open_files is not None:
            # the rest is for logged-in agents, technicians, the database and the logs
            total = max(1, min(total, open_files // 2))
        return cls(
            login_timeout=_env_number("HELPLINE_LOGIN_TIMEOUT", cls.login_timeout),
            preauth_per_source=int(
                _env_number("HELPLINE_PREAUTH_PER_SOURCE", cls.preauth_per_source)
            ),
            preauth_total=total,
            calls_per_connection=int(
                _env_number("HELPLINE_CALLS_PER_CONNECTION", cls.calls_per_connection)
            ),
            calls_per_user=int(_env_number("HELPLINE_CALLS_PER_USER", cls.calls_per_user)),
            report_interval=_env_number("HELPLINE_REPORT_INTERVAL", cls.report_interval),
        )


def source_key(address: str) -> str:
    """The unit a per-source limit counts: the IPv4 address, or the IPv6 /64."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


def raise_open_files_limit() -> tuple[int, int]:
    """Raise the soft open-files limit to the hard one; returns (before, after)."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError) as exc:
            log.warning("cannot raise the open-files limit from %d: %s", soft, exc)
            return soft, soft
        return soft, target
    return soft, soft


class PreauthGate:
    """Counts connections that have not logged in yet, per source and in total."""

    def __init__(self, per_source: int, total: int) -> None:
        self.per_source = per_source
        self.total = total
        self._by_source: dict[str, int] = {}
        self._pending: dict[object, str] = {}

    def admit(self, connection: object, source: str) -> str | None:
        """Count ``connection`` in, or say why it is refused (and count nothing)."""
        key = source_key(source)
        if len(self._pending) >= self.total:
            return "too many connections are waiting to log in; try again shortly"
        if self._by_source.get(key, 0) >= self.per_source:
            return "too many connections from this address are waiting to log in"
        self._pending[connection] = key
        self._by_source[key] = self._by_source.get(key, 0) + 1
        return None

    def release(self, connection: object) -> None:
        """The connection logged in or went away; idempotent."""
        key = self._pending.pop(connection, None)
        if key is None:
            return
        left = self._by_source[key] - 1
        if left:
            self._by_source[key] = left
        else:
            del self._by_source[key]

    @property
    def pending(self) -> int:
        return len(self._pending)


@dataclass
class _Window:
    started: float
    suppressed: int = 0
    last: dict[str, Any] = field(default_factory=dict)


class AuditThrottle:
    """Aggregates repeated hostile events per (type, source) into one row per interval.

    The first event of a kind from a source is written as it is; further ones within
    ``interval`` seconds are only counted, and :meth:`flush` (run every interval, and at
    shutdown) writes one row of the same type with ``details.aggregated`` = the count and
    the last event's details. No event goes unrecorded, and a fuzzer cannot turn its
    frames into as many audit rows.
    """

    def __init__(
        self, write: Callable[..., Awaitable[None]], interval: float, *, max_keys: int = 10_000
    ) -> None:
        self._write = write
        self.interval = interval
        self.max_keys = max_keys
        self._windows: dict[tuple[str, str], _Window] = {}

    async def record(self, type: str, source: str, **fields: Any) -> None:
        """Audit one event, or count it into the current window of its kind and source."""
        now = time.monotonic()
        key = (type, source_key(source))
        window = self._windows.get(key)
        if window is not None and now - window.started < self.interval:
            window.suppressed += 1
            window.last = fields
            return
        if window is not None:
            await self._finish(key, window)
        self._windows[key] = _Window(now)
        if len(self._windows) > self.max_keys:
            await self.flush(now)
        await self._write(type, source=source, **fields)

    async def flush(self, now: float | None = None) -> None:
        """Write the summaries of finished windows (all of them when ``now`` is None).

        A summary that cannot be written stays counted and is tried again next time.
        """
        moment = time.monotonic() if now is None else now
        for key, window in list(self._windows.items()):
            if now is None or moment - window.started >= self.interval:
                await self._finish(key, window)

    async def _finish(self, key: tuple[str, str], window: _Window) -> None:
        count, window.suppressed = window.suppressed, 0
        if count:
            type, source = key
            fields = dict(window.last)
            fields.pop("source", None)
            fields["details"] = {
                **(fields.get("details") or {}),
                "aggregated": count,
                "interval_s": self.interval,
            }
            try:
                await self._write(type, source=source, **fields)
            except BaseException:
                window.suppressed += count
                raise
        if self._windows.get(key) is window and not window.suppressed:
            del self._windows[key]


_RESOURCE_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})


class ResourceErrorFilter(logging.Filter):
    """Lets one "out of file descriptors" record through per interval, with a count.

    Out of descriptors, asyncio retries ``accept`` every second and each TLS handshake
    that cannot open a socket logs a traceback: hundreds of thousands of lines a minute.
    One line per interval says the same.
    """

    def __init__(self, interval: float) -> None:
        super().__init__()
        self.interval = interval
        self._last = -float("inf")
        self._suppressed = 0

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if not isinstance(exc, OSError) or exc.errno not in _RESOURCE_ERRNOS:
            return True
        now = time.monotonic()
        if now - self._last < self.interval:
            self._suppressed += 1
            return False
        self._last = now
        message = f"{record.getMessage()}: {exc}"
        if self._suppressed:
            message += f" ({self._suppressed} more like it since the last report)"
            self._suppressed = 0
        # the traceback adds nothing when the cause is the process's file limit
        record.msg, record.args, record.exc_info, record.exc_text = message, (), None, None
        return True


def install_resource_filter(interval: float) -> ResourceErrorFilter:
    """Attach the filter to every root handler, where all libraries' records end up."""
    flt = ResourceErrorFilter(interval)
    root = logging.getLogger()
    for handler in root.handlers:
        handler.addFilter(flt)
    return flt
