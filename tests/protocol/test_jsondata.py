"""What an agent's free-form data and text may hold: what every store can keep."""

from __future__ import annotations

from typing import Any

import pytest

from protocol import codec
from protocol.errors import MalformedFrame
from protocol.jsondata import MAX_DEPTH, problem


def _nested(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = [value]
    return value


@pytest.mark.parametrize(
    ("data", "says"),
    [
        ({"cpu": {"count": 2**64}}, "data.cpu.count: integer outside the 64-bit range"),
        ({"x": [1, -(2**63) - 1]}, "data.x.1: integer outside the 64-bit range"),
        ({"x": float("nan")}, "data.x: nan is not a JSON number"),
        ({"x": float("inf")}, "data.x: inf is not a JSON number"),
        ({"log": "a\x00b"}, "data.log: text with a NUL character"),
        ({"a\x00": 1}, "data: a key that is not plain text"),
        ({"x": "\ud800"}, "data.x: text with an unpaired surrogate"),
        ({"deep": _nested(MAX_DEPTH + 1)}, f"nested deeper than {MAX_DEPTH} levels"),
        ({"x": b"bytes"}, "data.x: bytes is not JSON"),
    ],
)
def test_what_no_store_can_hold_is_named(data: dict[str, Any], says: str) -> None:
    found = problem(data)
    assert found is not None and says in found


def test_ordinary_data_passes() -> None:
    data = {"n": 2**63 - 1, "m": -(2**63), "f": 1.5, "t": "ok ✓", "l": [None, True, {}]}
    assert problem(data) is None
    assert problem({"deep": _nested(MAX_DEPTH - 1)}) is None


def test_a_long_path_is_shortened() -> None:
    key = "k" * 10_000
    found = problem({key: 2**64})
    assert found is not None and len(found) < 200


@pytest.mark.parametrize(
    "frame",
    [
        '{"type":"end","v":1,"id":"a","reason":"bye\\u0000"}',
        '{"type":"rating","v":1,"id":"a","score":5,"comment":"\\u0000"}',
    ],
)
def test_agent_text_with_nul_is_refused_at_the_frame(frame: str) -> None:
    with pytest.raises(MalformedFrame, match="NUL"):
        codec.decode(frame)
