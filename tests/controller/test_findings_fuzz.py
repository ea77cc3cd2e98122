"""Findings and diffs never raise, whatever JSON an agent put in a snapshot.

Snapshots come from customers' machines. Each example takes recorded snapshots from
``tests/fixtures/snapshots`` and replaces values anywhere in them (a section, a partition,
a number deep inside) with arbitrary JSON, then evaluates and compares them.
"""

from __future__ import annotations

import copy
import json
from functools import cache
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from controller.findings import compare, evaluate

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "snapshots"

_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()  # beyond 64 bits too: readers must not depend on the boundary check
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20)
    | st.sampled_from(["", "0", "1e999", "-1", "nan", "{x}", "$.cpu"])
)
JSON = st.recursive(
    _SCALARS,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


@cache
def snapshots() -> tuple[str, ...]:
    return tuple(sorted(p.stem for p in FIXTURES.glob("*.json")))


@cache
def _load(name: str) -> str:
    return (FIXTURES / f"{name}.json").read_text()


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every place in ``value`` a mutation can put something else."""
    found = [prefix]
    if isinstance(value, dict):
        for key, inner in value.items():
            found += _paths(inner, (*prefix, key))
    elif isinstance(value, list):
        for index, inner in enumerate(value[:5]):
            found += _paths(inner, (*prefix, index))
    return found


def _replace(root: Any, path: tuple[Any, ...], new: Any) -> Any:
    if not path:
        return new
    parent = root
    for part in path[:-1]:
        parent = parent[part]
    parent[path[-1]] = new
    return root


@st.composite
def mutated(draw: st.DrawFn) -> Any:
    snapshot: Any = json.loads(_load(draw(st.sampled_from(snapshots()))))
    for _ in range(draw(st.integers(1, 4))):
        paths = _paths(snapshot)
        path = paths[draw(st.integers(0, len(paths) - 1))]
        choice = draw(st.sampled_from(["json", "empty_dict", "empty_list", "drop"]))
        if choice == "drop" and path:
            parent = snapshot
            for part in path[:-1]:
                parent = parent[part]
            del parent[path[-1]]
            continue
        new: Any = {"json": None, "empty_dict": {}, "empty_list": []}.get(choice)
        if choice == "json":
            new = draw(JSON)
        snapshot = _replace(snapshot, path, copy.deepcopy(new))
    return snapshot


def _json_safe(value: Any) -> None:
    json.dumps(value, default=str)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(before=mutated(), after=mutated())
def test_evaluate_and_compare_never_raise(before: Any, after: Any) -> None:
    for snapshot in (before, after):
        findings = evaluate(snapshot)
        assert all(isinstance(f["rule"], str) for f in findings)
        _json_safe(findings)
    if isinstance(before, dict) and isinstance(after, dict):
        diff = compare(before, after)
        assert set(diff["findings"]) == {"resolved", "new", "remaining", "not_compared"}
        _json_safe(diff)
        _json_safe(compare(after, before))


def test_an_empty_partition_in_the_newer_snapshot_is_compared() -> None:
    """The case the attack run found: a ``{}`` item only the newer snapshot has."""
    before = json.loads(_load("base"))
    after = copy.deepcopy(before)
    partitions = after["disks"]["partitions"]
    partitions.append({})
    diff = compare(before, after)
    _json_safe(diff)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(before=mutated(), after=mutated())
def test_the_technicians_view_never_raises(before: Any, after: Any) -> None:
    """The CLI renders what ``diag.run`` and ``diag.diff`` return: any snapshot, any diff."""
    import io

    from rich.console import Console

    from controller.cli.render import render_diagnostics, render_diff

    console = Console(file=io.StringIO(), width=100)
    for snapshot in (before, after):
        if isinstance(snapshot, dict):
            render_diagnostics(console, snapshot, evaluate(snapshot))
    if isinstance(before, dict) and isinstance(after, dict):
        render_diff(console, {"ticket": "T-1", "before": {}, "after": {}, **compare(before, after)})
