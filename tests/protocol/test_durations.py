"""The one duration syntax (protocol/durations.py): pure, so tested without a clock."""

from __future__ import annotations

import pytest

from protocol import durations


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("90", 90),
        ("45s", 45),
        ("10m", 600),
        ("2h", 7200),
        ("1h30m", 5400),
        ("3d", 259_200),
        ("2w", 1_209_600),
        ("1d12h", 129_600),
        ("1w2d3h4m5s", 788_645),
        (" 2H ", 7200),
    ],
)
def test_durations(text: str, seconds: int) -> None:
    assert durations.parse_seconds(text) == seconds


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "not a duration"),
        ("2x", "not a duration: '2x'"),
        ("1.5h", "not a duration"),
        ("-1h", "not a duration"),
        ("30m1h", "largest first"),
        ("1h1h", "largest first"),
        ("1 h", "not a duration"),
        ("0", "is zero"),
        ("0h0m", "is zero"),
        (5, "not a duration: 5"),
    ],
)
def test_what_is_not_a_duration_says_what_one_is(text: object, message: str) -> None:
    with pytest.raises(durations.DurationError, match=message) as info:
        durations.parse_seconds(text)
    assert "e.g. 45s, 10m" in str(info.value) or "zero" in str(info.value)


def test_days_are_noticed() -> None:
    assert durations.uses_days("3d") and durations.uses_days("1w")
    assert not durations.uses_days("30h")
