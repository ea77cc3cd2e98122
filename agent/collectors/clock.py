"""time: is the clock synchronised, and by how much is it off (where the OS says).

On Linux the kernel's own view comes first: ``adjtimex(2)`` with no changes requested
answers whether an NTP client keeps the clock in sync (the flag ``timedatectl`` reads),
with the estimated and maximum error. chrony, when installed, adds the measured offset;
systemd adds whether its time service is switched on.
"""

from __future__ import annotations

import sys
import time
from typing import Any, Final

from agent.collectors._common import (
    CollectorError,
    Context,
    iso,
    run,
    systemd_running,
    unavailable,
    which,
)

COMMAND_TIMEOUT: Final = 1.5
_TIME_ERROR: Final = 5
_STA_UNSYNC: Final = 0x0040
_STA_NANO: Final = 0x2000


def collect(ctx: Context) -> dict[str, Any]:
    if not sys.platform.startswith("linux"):
        return unavailable(
            "clock synchronisation is not read on this platform", now=iso(time.time())
        )
    result: dict[str, Any] = {"available": True, "now": iso(time.time(), "milliseconds")}
    result.update(kernel_clock())
    if which("chronyc"):
        try:
            result["chrony"] = parse_chrony(run(["chronyc", "-c", "tracking"], COMMAND_TIMEOUT))
        except CollectorError as exc:
            result["chrony"] = {"error": str(exc)}
        else:
            offset = result["chrony"].get("offset_ms")
            if offset is not None:
                result["offset_ms"] = offset
                result["source"] = "chrony"
    if systemd_running() and which("timedatectl"):
        try:
            text = run(["timedatectl", "show", "-p", "NTP", "-p", "NTPSynchronized"], 1.0)
        except CollectorError:
            text = ""
        values = dict(line.split("=", 1) for line in text.splitlines() if "=" in line)
        if "NTP" in values:
            result["ntp_service"] = values["NTP"] == "yes"
    return result


def kernel_clock() -> dict[str, Any]:
    """The kernel's synchronisation state from ``adjtimex`` (read-only: modes = 0)."""
    import ctypes

    class Timeval(ctypes.Structure):
        _fields_ = [("tv_sec", ctypes.c_long), ("tv_usec", ctypes.c_long)]

    class Timex(ctypes.Structure):
        _fields_ = [
            ("modes", ctypes.c_uint),
            ("offset", ctypes.c_long),
            ("freq", ctypes.c_long),
            ("maxerror", ctypes.c_long),
            ("esterror", ctypes.c_long),
            ("status", ctypes.c_int),
            ("constant", ctypes.c_long),
            ("precision", ctypes.c_long),
            ("tolerance", ctypes.c_long),
            ("time", Timeval),
            ("tick", ctypes.c_long),
            ("ppsfreq", ctypes.c_long),
            ("jitter", ctypes.c_long),
            ("shift", ctypes.c_int),
            ("stabil", ctypes.c_long),
            ("jitcnt", ctypes.c_long),
            ("calcnt", ctypes.c_long),
            ("errcnt", ctypes.c_long),
            ("stbcnt", ctypes.c_long),
            ("tai", ctypes.c_int),
            ("_reserved", ctypes.c_int * 11),
        ]

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        timex = Timex()
        state = int(libc.adjtimex(ctypes.byref(timex)))
    except (OSError, AttributeError) as exc:
        return {"synchronized": None, "source": None, "kernel_error": str(exc)}
    if state < 0:
        return {"synchronized": None, "source": None, "kernel_error": f"adjtimex: {state}"}
    offset_unit = 1e-6 if timex.status & _STA_NANO else 1e-3  # ns or µs → ms
    return {
        "synchronized": state != _TIME_ERROR and not timex.status & _STA_UNSYNC,
        "source": "kernel",
        "offset_ms": round(timex.offset * offset_unit, 3),
        "max_error_ms": round(timex.maxerror / 1000, 1),
        "estimated_error_ms": round(timex.esterror / 1000, 1),
    }


def parse_chrony(text: str) -> dict[str, Any]:
    """``chronyc -c tracking``: reference, stratum, system time offset (s), leap status."""
    cols = text.strip().split(",")
    if len(cols) < 14:
        raise CollectorError("chronyc tracking: unexpected output")
    try:
        offset_ms = round(float(cols[4]) * 1000, 3)
        stratum = int(cols[2])
    except ValueError:
        raise CollectorError("chronyc tracking: unexpected output") from None
    return {
        "reference": cols[1] or cols[0],
        "stratum": stratum,
        "offset_ms": offset_ms,
        "leap_status": cols[13],
        "synchronized": cols[13] != "Not synchronised" and stratum > 0,
    }
