"""SLA policy files (errors name the line) and the two clocks of a ticket."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from controller.tickets import sla
from controller.tickets.sla import PolicyError
from protocol.vocabulary import PRIORITIES

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)  # Monday 10:00 in Berlin
GOOD = """\
at_risk = 0.25
[calendars.office]
timezone = "Europe/Berlin"
hours = ["mon-fri 08:00-18:00"]
[priorities.P1]
first_response = "15m"
resolution = "4h"
[priorities.P2]
calendar = "office"
first_response = "1h"
resolution = "8h"
"""


def test_the_packaged_example_is_a_valid_policy() -> None:
    policy = sla.load_policy(None)
    assert set(policy.targets) == set(PRIORITIES)
    assert policy.target("P1") is not None
    assert policy.calendars["office"].is_holiday(datetime(2027, 12, 25).date())


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        ("at_risk = 2\n", 1, "at_risk must be a fraction"),
        ("[priorities.P1]\nfirst_response = '15m'\nresolution = '4 hours'\n", 3, "not a duration"),
        ("[priorities.P1]\nfirst_respons = '15m'\n", 2, "unknown key 'first_respons'"),
        ("[priorities.P9]\nfirst_response = '1m'\nresolution = '1h'\n", 1, "priorities are P1"),
        ("[priorities.P1]\nresolution = '1h'\n", 1, "needs first_response"),
        ("\n[priorities.P2]\ncalendar = 'office'\nfirst_response = '1m'\n", 3, "no calendar"),
        ("[calendars.x]\ntimezone = 'Mars/Base'\nhours = ['mon 08:00-09:00']\n", 2, "time zone"),
        ("[calendars.x]\ntimezone = 'UTC'\nhours = ['mon 9-17']\n", 3, "not a time range"),
        ("[calendars.x]\ntimezone = 'UTC'\nhours = ['mon 08:00-09:00']\nholidays = ['xmas']\n",
         4, "not a holiday"),
        ("[calendars.'24/7']\ntimezone = 'UTC'\nhours = ['mon 08:00-09:00']\n", 1, "built in"),
        ("[priorities.P1]\nfirst_response = '1m'\nresolution = '1h'\n"
         "escalate_at_risk = 'L4'\n", 4, "L2 or L3"),
        ("[priorities.P1]\nfirst_response = '0m'\nresolution = '1h'\n", 2, "zero"),
    ],
)  # fmt: skip
def test_a_malformed_policy_names_the_line(text: str, line: int, message: str) -> None:
    with pytest.raises(PolicyError) as info:
        sla.parse_policy(text, "sla.toml")
    assert f"sla.toml line {line}: " in str(info.value)
    assert message in str(info.value)


def test_a_toml_syntax_error_names_the_line_too() -> None:
    with pytest.raises(PolicyError, match=r"sla.toml: not valid TOML: .*line 2"):
        sla.parse_policy("[priorities.P1]\nfirst_response = \n", "sla.toml")


@pytest.mark.parametrize(("text", "seconds"), [("45s", 45), ("30m", 1800), ("1h30m", 5400)])
def test_durations(text: str, seconds: int) -> None:
    assert sla.parse_duration(text) == timedelta(seconds=seconds)


def _history(*steps: tuple[float, str]) -> list[tuple[datetime, str]]:
    return [(T0 + timedelta(hours=h), state) for h, state in steps]


def test_first_response_clock() -> None:
    policy = sla.parse_policy(GOOD, "t")
    clock = sla.first_response_clock(policy, "P1", T0, None, T0 + timedelta(minutes=10))
    assert (clock.status, clock.remaining) == ("on_track", timedelta(minutes=5))
    clock = sla.first_response_clock(policy, "P1", T0, None, T0 + timedelta(minutes=12))
    assert clock.status == "at_risk"
    clock = sla.first_response_clock(policy, "P1", T0, None, T0 + timedelta(minutes=20))
    assert (clock.status, clock.breached_at) == ("breached", T0 + timedelta(minutes=15))
    met = sla.first_response_clock(policy, "P1", T0, T0 + timedelta(minutes=15), T0)
    assert (met.status, met.breached_at) == ("met", None)
    none = sla.first_response_clock(policy, "P4", T0, None, T0 + timedelta(days=9))
    assert (none.status, none.target, none.deadline) == ("none", None, None)


def test_resolution_clock_pauses_stops_and_runs_on_after_a_reopen() -> None:
    policy = sla.parse_policy(GOOD, "t")  # P1: 4 h, 24/7
    history = _history((0, "new"), (1, "open"), (2, "waiting"), (30, "open"))
    clock = sla.resolution_clock(policy, "P1", history, T0 + timedelta(hours=31))
    assert clock.elapsed == timedelta(hours=3)  # 2 before waiting, 1 after
    assert clock.status == "on_track" and clock.deadline == T0 + timedelta(hours=32)
    late = sla.resolution_clock(policy, "P1", history, T0 + timedelta(hours=31, minutes=30))
    assert late.status == "at_risk" and late.deadline == clock.deadline  # 30 of 240 min left
    paused = sla.resolution_clock(policy, "P1", history[:3], T0 + timedelta(hours=20))
    assert (paused.status, paused.deadline) == ("paused", None)
    done = [*history, (T0 + timedelta(hours=31), "resolved"), (T0 + timedelta(hours=40), "closed")]
    clock = sla.resolution_clock(policy, "P1", done, T0 + timedelta(hours=50))
    assert (clock.status, clock.elapsed, clock.stopped_at) == (
        "met",
        timedelta(hours=3),
        T0 + timedelta(hours=31),
    )
    again = [*done[:-1], (T0 + timedelta(hours=35), "open")]
    clock = sla.resolution_clock(policy, "P1", again, T0 + timedelta(hours=37))
    assert clock.status == "breached" and clock.elapsed == timedelta(hours=5)
    assert clock.breached_at == T0 + timedelta(hours=36)


def test_resolution_clock_counts_office_hours_only() -> None:
    policy = sla.parse_policy(GOOD, "t")  # P2: 8 h of Mon-Fri 08-18 Berlin
    friday = datetime(2026, 3, 6, 15, 0, tzinfo=UTC)  # 16:00 Berlin
    clock = sla.resolution_clock(policy, "P2", [(friday, "new")], friday + timedelta(days=3))
    assert clock.elapsed == timedelta(hours=2 + 8)  # Friday 16-18, Monday 08-16 (UTC 15)
    assert clock.status == "breached"
    assert clock.breached_at == datetime(2026, 3, 9, 13, 0, tzinfo=UTC)  # Monday 14:00


def test_the_worse_clock_wins() -> None:
    assert sla.worst("met", "at_risk", "on_track") == "at_risk"
    assert sla.worst("paused", "breached") == "breached"
    assert sla.worst("none", "met") == "met"
