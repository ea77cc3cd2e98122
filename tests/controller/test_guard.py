"""The connection guard's parts without a network: gate, audit throttle, log filter, keys."""

from __future__ import annotations

import errno
import logging
from typing import Any

import pytest

from controller.guard import AuditThrottle, Limits, PreauthGate, ResourceErrorFilter, source_key


def test_sources_are_ipv4_addresses_and_ipv6_prefixes() -> None:
    assert source_key("192.0.2.7") == "192.0.2.7"
    # one line holds a whole /64: rotating addresses inside it is still one source
    assert source_key("2001:db8::1") == source_key("2001:db8::ffff:1") == "2001:db8::/64"
    assert source_key("2001:db8:0:1::1") != source_key("2001:db8::1")
    assert source_key("::ffff:192.0.2.7") == "192.0.2.7"
    assert source_key("unknown") == "unknown"


def test_the_gate_caps_per_source_and_in_total() -> None:
    gate = PreauthGate(per_source=2, total=3)
    a, b, c, d = object(), object(), object(), object()
    assert gate.admit(a, "127.0.0.2") is None
    assert gate.admit(b, "127.0.0.2") is None
    assert "this address" in (gate.admit(c, "127.0.0.2") or "")
    assert gate.admit(c, "127.0.0.3") is None
    assert "too many connections" in (gate.admit(d, "127.0.0.4") or "")
    gate.release(a)
    gate.release(a)  # a connection that logged in and then closed: released once
    assert gate.pending == 2
    assert gate.admit(d, "127.0.0.2") is None


def test_limits_come_from_the_environment_and_fit_the_file_limit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HELPLINE_LOGIN_TIMEOUT", "2.5")
    monkeypatch.setenv("HELPLINE_PREAUTH_TOTAL", "5000")
    limits = Limits.from_env(open_files=1024)
    assert limits.login_timeout == 2.5
    assert limits.preauth_total == 512  # half the descriptors stay for logged-in peers
    monkeypatch.setenv("HELPLINE_LOGIN_TIMEOUT", "soon")
    with pytest.raises(ValueError, match="HELPLINE_LOGIN_TIMEOUT must be a number"):
        Limits.from_env()


async def test_repeated_events_become_one_row_per_interval_with_a_count() -> None:
    rows: list[dict[str, Any]] = []

    async def write(type: str, **fields: Any) -> None:
        rows.append({"type": type, **fields})

    throttle = AuditThrottle(write, interval=3600)
    for n in range(1000):
        await throttle.record("protocol.error", "127.0.0.2", details={"n": n})
    await throttle.record("protocol.error", "127.0.0.3", details={"n": 0})
    assert [(r["source"], r["details"]) for r in rows] == [
        ("127.0.0.2", {"n": 0}),
        ("127.0.0.3", {"n": 0}),
    ]
    await throttle.flush(now=0)  # no interval has ended yet
    assert len(rows) == 2
    await throttle.flush()  # shutdown: everything counted is written
    assert rows[-1] == {
        "type": "protocol.error",
        "source": "127.0.0.2",
        "details": {"n": 999, "aggregated": 999, "interval_s": 3600},
    }
    assert len(rows) == 3  # 127.0.0.3 had nothing more to report


def test_running_out_of_descriptors_is_logged_once_per_interval() -> None:
    flt = ResourceErrorFilter(interval=3600)

    def record(error: int) -> logging.LogRecord:
        exc = OSError(error, "Too many open files")
        return logging.LogRecord(
            "asyncio",
            logging.ERROR,
            __file__,
            1,
            "socket.accept() %s",
            ("failed",),
            (OSError, exc, None),
        )

    first = record(errno.EMFILE)
    assert flt.filter(first)
    assert first.getMessage() == "socket.accept() failed: [Errno 24] Too many open files"
    assert first.exc_info is None
    assert not any(flt.filter(record(errno.EMFILE)) for _ in range(10_000))
    assert flt.filter(record(errno.ECONNRESET))  # other errors are not this filter's business
