"""The one duration syntax of every option and file: ``90``, ``45s``, ``10m``, ``2h``,
``1h30m``, ``3d``, ``2w``, ``1d12h``.

Pure: no clock, no I/O. Units are s, m, h, d (24 h) and w (7 d), largest first, each at
most once; a bare number is seconds. What a duration measures is up to its reader: an
SLA target is working time of its calendar (``3d`` there is 72 working hours, which
``controller.tickets.sla`` points out), a code lifetime or ``--since`` is wall-clock time.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Final

UNITS: Final = {"w": 604_800, "d": 86_400, "h": 3_600, "m": 60, "s": 1}
_PART: Final = re.compile(r"(\d+)([wdhms])")
EXAMPLES: Final = "units w, d, h, m, s, largest first: e.g. 45s, 10m, 2h, 1h30m, 3d, 2w"


class DurationError(ValueError):
    """Not a duration; the message says what one looks like."""


def parse_seconds(text: object) -> int:
    """A positive duration in whole seconds; :class:`DurationError` if it is not one."""
    if not isinstance(text, str):
        raise DurationError(f"not a duration: {text!r} ({EXAMPLES})")
    value = text.strip().lower()
    if value.isdigit():
        seconds = int(value)
    else:
        parts = _PART.findall(value)
        units = [unit for _, unit in parts]
        if (
            not parts
            or "".join(n + u for n, u in parts) != value
            or len(set(units)) != len(units)
            or units != sorted(units, key=lambda u: -UNITS[u])
        ):
            raise DurationError(f"not a duration: {text!r} ({EXAMPLES})")
        seconds = sum(int(number) * UNITS[unit] for number, unit in parts)
    if seconds == 0:
        raise DurationError(f"a duration of {text!r} is zero")
    return seconds


def parse(text: object) -> timedelta:
    """:func:`parse_seconds` as a timedelta."""
    return timedelta(seconds=parse_seconds(text))


def uses_days(text: str) -> bool:
    """Whether a valid duration counts in days or weeks (24-hour days)."""
    return any(unit in "dw" for _, unit in _PART.findall(text.strip().lower()))
