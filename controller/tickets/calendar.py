"""Business-hours calendars and the arithmetic the SLA clocks need.

A calendar is either 24/7 or weekly working hours in one time zone, minus holidays. Hours
are wall-clock times in that zone; all instants going in and out are timezone-aware UTC.

Daylight-saving changes: a working window is the real time between its wall-clock start
and end, so a window 00:00-06:00 lasts 5 hours on the night the clocks go forward and 7 on
the night they go back. A wall-clock time that does not exist (skipped by the change) is
taken as the moment the clocks jumped; one that exists twice, as its first occurrence.
That mapping (:func:`utc_of`) never goes backwards, so windows never overlap.

``elapsed(a, b)`` is the working time between two instants; ``add(a, d)`` is the earliest
instant at which ``d`` of working time has passed since ``a``. They are exact inverses
(``elapsed(a, add(a, d)) == d``), which ``tests/tickets/test_calendar.py`` checks with
hypothesis across DST changes and holidays.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Final
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

DAYS: Final = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
ALWAYS: Final = "24/7"
#: how far ``add`` looks for working time before it calls the calendar empty
_HORIZON_DAYS: Final = 366 * 30
_TIME: Final = re.compile(r"^([01]\d|2[0-4]):([0-5]\d)$")
_ZERO: Final = timedelta(0)

#: a day's working windows, as minutes after local midnight: ((start, end), …), end ≤ 1440
Windows = tuple[tuple[int, int], ...]


@dataclass(frozen=True)
class Calendar:
    """Working time: 24/7, or ``week`` hours in ``zone`` minus holidays."""

    name: str
    zone: ZoneInfo = field(default_factory=lambda: ZoneInfo("UTC"))
    #: Monday first; empty for a day off
    week: tuple[Windows, ...] = ()
    holidays: frozenset[date] = frozenset()
    #: (month, day) pairs that are holidays every year
    yearly: frozenset[tuple[int, int]] = frozenset()

    @property
    def always(self) -> bool:
        """True for a 24/7 calendar: working time is wall time."""
        return not self.week

    def is_holiday(self, day: date) -> bool:
        """Whether ``day`` (a local date) is a holiday."""
        return day in self.holidays or (day.month, day.day) in self.yearly

    def windows(
        self, start: datetime, end: datetime | None = None
    ) -> Iterator[tuple[datetime, datetime]]:
        """Working windows in UTC, in order, clipped to ``[start, end)`` (open end: forever)."""
        _aware(start)
        if end is not None:
            _aware(end)
            if end <= start:
                return
        if self.always:
            yield start, end if end is not None else datetime.max.replace(tzinfo=UTC)
            return
        day = _wall(start, self.zone).date() - timedelta(days=1)
        for _ in range(_HORIZON_DAYS):
            midnight = datetime.combine(day, time())
            if end is not None and utc_of(midnight, self.zone) >= end:
                return
            if not self.is_holiday(day):
                for first, last in self.week[day.weekday()]:
                    lo = utc_of(midnight + timedelta(minutes=first), self.zone)
                    hi = utc_of(midnight + timedelta(minutes=last), self.zone)
                    lo, hi = max(lo, start), hi if end is None else min(hi, end)
                    if lo < hi:
                        yield lo, hi
            day += timedelta(days=1)
        if end is None:
            raise ValueError(f"calendar {self.name!r} has no working time in the next 30 years")

    def elapsed(self, start: datetime, end: datetime) -> timedelta:
        """Working time between two instants (zero when ``end`` is not after ``start``)."""
        if self.always:
            return max(_ZERO, end - start)
        return sum((hi - lo for lo, hi in self.windows(start, end)), _ZERO)

    def add(self, start: datetime, amount: timedelta) -> datetime:
        """The earliest instant by which ``amount`` of working time has passed since ``start``."""
        _aware(start)
        if amount <= _ZERO:
            return start
        if self.always:
            return start + amount
        left = amount
        for lo, hi in self.windows(start):
            if hi - lo >= left:
                return lo + left
            left -= hi - lo
        raise AssertionError("unreachable: windows() raises when it runs out")  # pragma: no cover

    def describe(self) -> str:
        """The calendar in one line, for people."""
        if self.always:
            return ALWAYS
        days = []
        for name, windows in zip(DAYS, self.week, strict=True):
            if windows:
                days.append(f"{name} " + " ".join(f"{_hm(a)}-{_hm(b)}" for a, b in windows))
        extra = len(self.holidays) + len(self.yearly)
        return f"{'; '.join(days)} ({self.zone.key}{f', {extra} holidays' if extra else ''})"


def always(name: str = ALWAYS) -> Calendar:
    """The 24/7 calendar."""
    return Calendar(name)


def business(
    name: str,
    zone: str,
    hours: Sequence[str],
    holidays: Sequence[object] = (),
) -> Calendar:
    """A business-hours calendar; ValueError names what is wrong."""
    dated, yearly = parse_holidays(holidays)
    return Calendar(name, parse_zone(zone), parse_hours(hours), dated, yearly)


def parse_zone(name: object) -> ZoneInfo:
    """An IANA time zone by name; ValueError for anything else."""
    try:
        return ZoneInfo(str(name))
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f"unknown time zone {name!r} (use an IANA name like Europe/Berlin)"
        ) from None


def parse_hours(specs: Sequence[str]) -> tuple[Windows, ...]:
    """``["mon-fri 08:00-18:00", "sat 09:00-12:00 13:00-15:00"]`` to a week of windows."""
    if not specs:
        raise ValueError('hours is empty: give e.g. "mon-fri 08:00-18:00"')
    week: list[list[tuple[int, int]]] = [[] for _ in DAYS]
    for spec in specs:
        if not isinstance(spec, str) or not spec.split():
            raise ValueError(f'not an hours entry: {spec!r} (e.g. "mon-fri 08:00-18:00")')
        days_part, *ranges = spec.lower().split()
        if not ranges:
            raise ValueError(f'{spec!r}: no times after the days (e.g. "mon-fri 08:00-18:00")')
        for day in _days(days_part, spec):
            week[day].extend(_range(text, spec) for text in ranges)
    out = []
    for name, windows in zip(DAYS, week, strict=True):
        windows.sort()
        for (_, end), (start, _) in itertools.pairwise(windows):
            if start < end:
                raise ValueError(f"hours overlap on {name}")
        out.append(tuple(windows))
    if not any(out):
        raise ValueError("hours has no working time on any day")
    return tuple(out)


def parse_holidays(values: Sequence[object]) -> tuple[frozenset[date], frozenset[tuple[int, int]]]:
    """Dates (TOML dates or ``"YYYY-MM-DD"``) and yearly days (``"MM-DD"``)."""
    dated: set[date] = set()
    yearly: set[tuple[int, int]] = set()
    for value in values:
        if isinstance(value, datetime):
            raise ValueError(f"holiday {value.isoformat()}: give a date, not a date and time")
        if isinstance(value, date):
            dated.add(value)
            continue
        text = str(value)
        try:
            if re.fullmatch(r"\d{2}-\d{2}", text):
                day = date(2000, int(text[:2]), int(text[3:]))  # a leap year admits 02-29
                yearly.add((day.month, day.day))
            else:
                dated.add(date.fromisoformat(text))
        except ValueError:
            raise ValueError(
                f"not a holiday: {text!r} (a date like 2026-12-24, or 12-25 for every year)"
            ) from None
    return frozenset(dated), frozenset(yearly)


def utc_of(local: datetime, zone: ZoneInfo) -> datetime:
    """The earliest UTC instant whose wall-clock time in ``zone`` is ``local`` or later.

    For ordinary times that is simply the time; for a time that occurs twice, its first
    occurrence; for a time skipped by a DST change, the instant the clocks jumped.
    """
    first = local.replace(tzinfo=zone, fold=0).astimezone(UTC)
    second = local.replace(tzinfo=zone, fold=1).astimezone(UTC)
    real = [u for u in (first, second) if _wall(u, zone) == local]
    if real:
        return min(real)
    # Skipped: the jump lies between the two readings; find it to the second (zone
    # transitions fall on whole seconds). Invariant: wall(lo) < local <= wall(hi).
    lo, hi = int(min(first, second).timestamp()), int(max(first, second).timestamp()) + 1
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if _wall(datetime.fromtimestamp(mid, UTC), zone) >= local:
            hi = mid
        else:
            lo = mid
    return datetime.fromtimestamp(hi, UTC)


def _wall(moment: datetime, zone: ZoneInfo) -> datetime:
    return moment.astimezone(zone).replace(tzinfo=None)


def _aware(moment: datetime) -> None:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"naive datetime {moment.isoformat()}: pass an aware one")


def _days(text: str, spec: str) -> list[int]:
    days: list[int] = []
    for part in text.split(","):
        first, _, last = part.partition("-")
        if first not in DAYS or (last and last not in DAYS):
            raise ValueError(f"{spec!r}: days are mon, tue, wed, thu, fri, sat, sun (got {part!r})")
        a, b = DAYS.index(first), DAYS.index(last or first)
        if b < a:
            raise ValueError(f'{spec!r}: {part!r} runs backwards; split it (e.g. "fri,sat")')
        days.extend(range(a, b + 1))
    return days


def _range(text: str, spec: str) -> tuple[int, int]:
    first, sep, last = text.partition("-")
    start, end = _minutes(first), _minutes(last)
    if not sep or start is None or end is None or start >= end or start >= 1440:
        raise ValueError(f"{spec!r}: {text!r} is not a time range like 08:00-18:00")
    return start, end


def _minutes(text: str) -> int | None:
    match = _TIME.match(text)
    if match is None:
        return None
    minutes = int(match[1]) * 60 + int(match[2])
    return minutes if minutes <= 1440 else None


def _hm(minutes: int) -> str:
    return f"{minutes // 60:02d}:{minutes % 60:02d}"
