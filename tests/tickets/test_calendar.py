"""Business-hours arithmetic, property-tested across DST changes and holidays."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from functools import cache
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from controller.tickets import calendar as cal

ZONES = [
    "Europe/Berlin",
    "America/New_York",
    "Australia/Lord_Howe",  # DST of 30 minutes
    "America/Sao_Paulo",  # DST until 2019, none since
    "Pacific/Chatham",  # +12:45 / +13:45
    "America/St_Johns",  # -03:30 / -02:30
    "Asia/Kolkata",  # no DST
    "UTC",
]
YEARS = (2025, 2028)
MICRO = timedelta(microseconds=1)


@cache
def transitions(zone: str) -> tuple[datetime, ...]:
    """The UTC instants (to the hour) at which ``zone``'s offset changes, 2025-2027."""
    tz = ZoneInfo(zone)
    found = []
    moment = datetime(YEARS[0], 1, 1, tzinfo=UTC)
    step = timedelta(hours=1)
    offset = moment.astimezone(tz).utcoffset()
    while moment.year < YEARS[1]:
        moment += step
        now = moment.astimezone(tz).utcoffset()
        if now != offset:
            found.append(moment)
            offset = now
    return tuple(found) or (datetime(2026, 6, 1, tzinfo=UTC),)


@st.composite
def calendars(draw: st.DrawFn) -> cal.Calendar:
    zone = draw(st.sampled_from(ZONES))
    week = []
    for _ in range(7):
        points = sorted(draw(st.sets(st.integers(0, 96), max_size=4)))
        if len(points) % 2:
            points = points[:-1]
        week.append(tuple((points[i] * 15, points[i + 1] * 15) for i in range(0, len(points), 2)))
    if not any(week):
        week[draw(st.integers(0, 6))] = ((0, 360),)  # across the usual DST hour
    holidays = draw(
        st.sets(st.dates(date(YEARS[0], 1, 1), date(YEARS[1] - 1, 12, 31)), max_size=30)
    )
    yearly = draw(st.sets(st.tuples(st.integers(1, 12), st.integers(1, 28)), max_size=5))
    return cal.Calendar("t", ZoneInfo(zone), tuple(week), frozenset(holidays), frozenset(yearly))


@st.composite
def moments(draw: st.DrawFn, calendar: cal.Calendar) -> datetime:
    """Instants near the calendar zone's DST changes (and anywhere, now and then)."""
    if draw(st.booleans()):
        base = draw(st.sampled_from(transitions(calendar.zone.key)))
        return base + timedelta(seconds=draw(st.integers(-3 * 86400, 3 * 86400)))
    return draw(
        st.datetimes(
            datetime(YEARS[0], 1, 2), datetime(YEARS[1] - 1, 12, 1), timezones=st.just(UTC)
        )
    )


durations = st.builds(
    timedelta,
    seconds=st.integers(0, 60 * 3600),
    microseconds=st.integers(0, 999_999),
)
FAST = settings(max_examples=120, deadline=None)


@FAST
@given(st.data(), calendars(), durations)
def test_add_is_the_inverse_of_elapsed(data: st.DataObject, c: cal.Calendar, d: timedelta) -> None:
    start = data.draw(moments(c))
    end = c.add(start, d)
    assert end >= start
    assert c.elapsed(start, end) == d
    if d:
        # the earliest such instant: just before it, less has passed, and it is working time
        assert c.elapsed(start, end - MICRO) < d
        assert c.elapsed(end - MICRO, end) == MICRO


@FAST
@given(st.data(), calendars(), st.lists(durations, min_size=2, max_size=2))
def test_elapsed_adds_up_and_never_exceeds_wall_time(
    data: st.DataObject, c: cal.Calendar, steps: list[timedelta]
) -> None:
    a = data.draw(moments(c))
    b = a + steps[0] * 2
    z = b + steps[1] * 2
    ab, bz, az = c.elapsed(a, b), c.elapsed(b, z), c.elapsed(a, z)
    assert ab + bz == az
    assert timedelta(0) <= ab <= b - a
    assert c.elapsed(z, a) == timedelta(0)


@FAST
@given(st.data(), calendars(), durations, durations)
def test_add_is_monotonic(data: st.DataObject, c: cal.Calendar, x: timedelta, y: timedelta) -> None:
    start = data.draw(moments(c))
    small, large = sorted((x, y))
    assert c.add(start, small) <= c.add(start, large)
    # adding in two steps lands where adding at once does
    assert c.add(c.add(start, small), large - small) == c.add(start, large)


@FAST
@given(st.data(), calendars())
def test_holidays_have_no_working_time(data: st.DataObject, c: cal.Calendar) -> None:
    days = sorted(c.holidays)
    if not days:
        return
    day = data.draw(st.sampled_from(days))
    start = cal.utc_of(datetime.combine(day, time()), c.zone)
    end = cal.utc_of(datetime.combine(day + timedelta(days=1), time()), c.zone)
    assert c.elapsed(start, end) == timedelta(0)
    assert not any(True for _ in c.windows(start, end))


@FAST
@given(st.sampled_from(ZONES), st.datetimes(datetime(2025, 1, 1), datetime(2027, 12, 31)))
def test_wall_clock_mapping_never_goes_backwards(zone: str, local: datetime) -> None:
    tz = ZoneInfo(zone)
    later = local + timedelta(minutes=30)
    first, second = cal.utc_of(local, tz), cal.utc_of(later, tz)
    assert first <= second
    assert first.astimezone(tz).replace(tzinfo=None) >= local


@FAST
@given(
    st.datetimes(datetime(2025, 1, 1), datetime(2027, 12, 31), timezones=st.just(UTC)), durations
)
def test_24_7_is_wall_time(start: datetime, d: timedelta) -> None:
    always = cal.always()
    assert always.add(start, d) == start + d
    assert always.elapsed(start, start + d) == d


def _night(zone: str, day: date) -> timedelta:
    c = cal.business("night", zone, ["mon-sun 00:00-06:00"])
    start = cal.utc_of(datetime.combine(day, time()), c.zone)
    end = cal.utc_of(datetime.combine(day + timedelta(days=1), time()), c.zone)
    return c.elapsed(start, end)


@pytest.mark.parametrize(
    ("zone", "day", "hours"),
    [
        ("Europe/Berlin", date(2026, 3, 29), 5),  # clocks go forward at 02:00
        ("Europe/Berlin", date(2026, 10, 25), 7),  # and back at 03:00
        ("Europe/Berlin", date(2026, 6, 1), 6),
        ("America/New_York", date(2026, 3, 8), 5),
        ("America/New_York", date(2026, 11, 1), 7),
        ("Asia/Kolkata", date(2026, 3, 29), 6),
    ],
)
def test_a_night_window_is_real_time_across_dst(zone: str, day: date, hours: int) -> None:
    assert _night(zone, day) == timedelta(hours=hours)


def test_office_hours_over_a_weekend_and_a_holiday() -> None:
    office = cal.business("office", "Europe/Berlin", ["mon-fri 08:00-18:00"], ["12-25", "12-26"])
    # Thursday 24 Dec 2026, 17:00 Berlin: one hour today, then Friday 25 is a holiday,
    # the weekend is off, and Monday 28 starts at 08:00
    start = datetime(2026, 12, 24, 16, 0, tzinfo=UTC)
    deadline = office.add(start, timedelta(hours=4))
    assert deadline == datetime(2026, 12, 28, 10, 0, tzinfo=UTC)  # 11:00 Berlin (UTC+1)
    assert office.elapsed(start, deadline) == timedelta(hours=4)


def test_a_deadline_across_the_spring_change_counts_real_hours() -> None:
    office = cal.business("office", "Europe/Berlin", ["mon-fri 08:00-18:00"])
    friday = datetime(2026, 3, 27, 16, 0, tzinfo=UTC)  # 17:00 CET
    # 1 h on Friday, then Monday 08:00 CEST = 06:00 UTC
    assert office.add(friday, timedelta(hours=3)) == datetime(2026, 3, 30, 8, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("hours", "message"),
    [
        ([], "empty"),
        (["mon-fri"], "no times"),
        (["mon-fry 08:00-18:00"], "days are"),
        (["fri-mon 08:00-18:00"], "backwards"),
        (["mon 18:00-08:00"], "not a time range"),
        (["mon 08:00-12:00 11:00-13:00"], "overlap on mon"),
        (["mon 25:00-26:00"], "not a time range"),
    ],
)
def test_bad_hours_are_named(hours: list[str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        cal.parse_hours(hours)


def test_bad_zone_and_holidays_are_named() -> None:
    with pytest.raises(ValueError, match="unknown time zone 'Mars/Olympus'"):
        cal.business("x", "Mars/Olympus", ["mon 08:00-09:00"])
    with pytest.raises(ValueError, match="not a holiday: '2026-13-01'"):
        cal.business("x", "UTC", ["mon 08:00-09:00"], ["2026-13-01"])
    with pytest.raises(ValueError, match="naive"):
        cal.always().add(datetime(2026, 1, 1), timedelta(hours=1))


@pytest.mark.parametrize(
    ("zone", "local", "utc"),
    [
        # skipped by the spring change: the instant the clocks jumped
        ("Europe/Berlin", datetime(2026, 3, 29, 2, 30), datetime(2026, 3, 29, 1, 0)),
        ("America/New_York", datetime(2026, 3, 8, 2, 30), datetime(2026, 3, 8, 7, 0)),
        ("Australia/Lord_Howe", datetime(2026, 10, 4, 2, 15), datetime(2026, 10, 3, 15, 30)),
        # twice in autumn: the first occurrence
        ("Europe/Berlin", datetime(2026, 10, 25, 2, 30), datetime(2026, 10, 25, 0, 30)),
        ("Europe/Berlin", datetime(2026, 6, 1, 9, 0), datetime(2026, 6, 1, 7, 0)),
    ],
)
def test_skipped_and_repeated_wall_times(zone: str, local: datetime, utc: datetime) -> None:
    assert cal.utc_of(local, ZoneInfo(zone)) == utc.replace(tzinfo=UTC)
