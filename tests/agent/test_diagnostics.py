"""A real snapshot of this machine, and how collectors fail and are selected."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import pytest

from agent import diagnostics
from agent.diagnostics import COLLECTORS, collect_snapshot


@pytest.fixture(scope="module")
def snapshot() -> dict[str, Any]:
    return collect_snapshot()


def test_every_section_present_without_errors(snapshot: dict[str, Any]) -> None:
    assert snapshot["errors"] == {}
    for name in COLLECTORS:
        assert isinstance(snapshot[name], dict), name
    assert datetime.fromisoformat(snapshot["taken_at"]).utcoffset() is not None
    assert snapshot["duration_ms"] >= 0


def test_system_section_is_sane(snapshot: dict[str, Any]) -> None:
    system = snapshot["system"]
    assert system["hostname"]
    assert system["os"]
    assert system["python"].startswith("3.")
    boot = datetime.fromisoformat(system["boot_time"])
    assert boot.utcoffset() is not None
    assert boot < datetime.fromisoformat(snapshot["taken_at"])
    assert system["uptime_seconds"] >= 0
    assert system["users"] >= 0


def test_cpu_section_is_sane(snapshot: dict[str, Any]) -> None:
    cpu = snapshot["cpu"]
    assert cpu["logical"] >= 1
    assert len(cpu["per_core"]) == min(cpu["logical"], diagnostics.MAX_CORES)
    assert 0.0 <= cpu["percent"] <= 100.0
    assert all(0.0 <= value <= 100.0 for value in cpu["per_core"])
    if cpu["load_avg"] is not None:
        assert len(cpu["load_avg"]) == 3


def test_memory_section_is_sane(snapshot: dict[str, Any]) -> None:
    memory = snapshot["memory"]
    assert memory["total"] > 0
    assert 0 < memory["available"] <= memory["total"]
    assert 0.0 <= memory["percent"] <= 100.0
    assert memory["swap"]["total"] >= memory["swap"]["used"] >= 0


def test_disks_section_lists_the_root_filesystem(snapshot: dict[str, Any]) -> None:
    partitions = snapshot["disks"]["partitions"]
    assert 1 <= len(partitions) <= diagnostics.MAX_PARTITIONS
    for part in partitions:
        assert part["total"] > 0
        assert part["used"] <= part["total"]
        assert 0.0 <= part["percent"] <= 100.0
    assert "/" in {part["mountpoint"] for part in partitions}


def test_processes_section_includes_this_test_run(snapshot: dict[str, Any]) -> None:
    processes = snapshot["processes"]
    assert processes["count"] >= 1
    for key in ("top_cpu", "top_memory"):
        rows = processes[key]
        assert 1 <= len(rows) <= diagnostics.TOP_PROCESSES
        assert {"pid", "name", "username", "rss", "cpu_seconds", "status"} <= rows[0].keys()
    rss = [row["rss"] for row in processes["top_memory"] if row["rss"] is not None]
    assert rss == sorted(rss, reverse=True)
    cpu = [row["cpu_seconds"] for row in processes["top_cpu"] if row["cpu_seconds"] is not None]
    assert cpu == sorted(cpu, reverse=True)


def test_snapshot_round_trips_through_json(snapshot: dict[str, Any]) -> None:
    assert json.loads(json.dumps(snapshot)) == snapshot


def test_subset_selection_returns_only_those_sections() -> None:
    snap = collect_snapshot(["processes", "memory", "memory"])
    sections = [key for key in snap if key in COLLECTORS]
    assert sections == ["memory", "processes"]
    assert snap["errors"] == {}


def test_empty_selection_takes_nothing() -> None:
    snap = collect_snapshot([])
    assert set(snap) == {"taken_at", "duration_ms", "errors"}


def test_unknown_collector_is_refused_with_the_valid_names() -> None:
    with pytest.raises(ValueError, match="bogus") as info:
        collect_snapshot(["memory", "bogus"])
    for name in COLLECTORS:
        assert name in str(info.value)


def test_a_bare_string_is_not_taken_for_a_list_of_names() -> None:
    with pytest.raises(TypeError):
        collect_snapshot("memory")


def test_a_failing_collector_is_reported_and_the_others_still_run(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def broken() -> dict[str, Any]:
        raise PermissionError("denied by policy")

    monkeypatch.setitem(diagnostics._REGISTRY, "disks", broken)
    snap = collect_snapshot()
    assert snap["errors"] == {"disks": "PermissionError: denied by policy"}
    assert "disks" not in snap
    for name in COLLECTORS:
        if name != "disks":
            assert isinstance(snap[name], dict), name
    json.dumps(snap)


def test_error_messages_are_clipped(monkeypatch: pytest.MonkeyPatch) -> None:
    def chatty() -> dict[str, Any]:
        raise RuntimeError("x" * 10_000)

    monkeypatch.setitem(diagnostics._REGISTRY, "memory", chatty)
    snap = collect_snapshot(["memory"])
    assert len(snap["errors"]["memory"]) <= diagnostics.MAX_ERROR
