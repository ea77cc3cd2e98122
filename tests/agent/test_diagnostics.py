"""A real snapshot of this machine, and how collectors are selected, fail, time out, and
are bounded."""

from __future__ import annotations

import json
import socket
import threading
from datetime import datetime
from typing import Any

import pytest

from agent import diagnostics
from agent.collectors._common import Context
from agent.diagnostics import collect_snapshot
from protocol.collectors import ALIASES, CATALOGUE, COLLECTORS, canonical


@pytest.fixture(scope="module")
def listener() -> Any:
    """A TCP port on 127.0.0.1 that accepts: the "controller" the network collector probes."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        yield sock.getsockname()[1]


@pytest.fixture(scope="module")
def snapshot(listener: int) -> dict[str, Any]:
    return collect_snapshot(controller_url=f"wss://127.0.0.1:{listener}", resolve="localhost")


def test_every_section_present_without_errors(snapshot: dict[str, Any]) -> None:
    assert snapshot["errors"] == {}
    assert snapshot["schema"] == diagnostics.SCHEMA
    assert snapshot["collectors"] == list(COLLECTORS)
    for name in COLLECTORS:
        assert isinstance(snapshot[name], dict), name
        assert snapshot["timings_ms"][name] >= 0, name
    assert datetime.fromisoformat(snapshot["taken_at"]).utcoffset() is not None
    assert snapshot["duration_ms"] >= 0


def test_system_section_is_sane(snapshot: dict[str, Any]) -> None:
    system = snapshot["system"]
    assert system["hostname"]
    assert system["os"]
    assert system["python"].startswith("3.")
    boot = datetime.fromisoformat(system["boot_time"])
    assert boot < datetime.fromisoformat(snapshot["taken_at"])
    assert system["uptime_seconds"] >= 0
    assert system["users"] >= 0
    assert system["timezone"]["name"]
    assert isinstance(system["timezone"]["utc_offset_minutes"], int)
    assert system["pending_reboot"] in (True, False, None)


def test_cpu_section_is_sane(snapshot: dict[str, Any]) -> None:
    cpu = snapshot["cpu"]
    assert cpu["logical"] >= 1
    assert len(cpu["per_core"]) == min(cpu["logical"], 256)
    assert 0.0 <= cpu["percent"] <= 100.0
    assert all(0.0 <= value <= 100.0 for value in cpu["per_core"])
    assert cpu["sample_ms"] > 0
    if cpu["load_avg"] is not None:
        assert len(cpu["load_avg"]) == 3
    for proc in cpu["top"]:
        assert proc["percent"] > 0 and proc["pid"] > 0


def test_memory_section_is_sane(snapshot: dict[str, Any]) -> None:
    memory = snapshot["memory"]
    assert memory["total"] > 0
    assert 0 < memory["available"] <= memory["total"]
    assert 0.0 <= memory["percent"] <= 100.0
    assert 0.0 <= memory["available_percent"] <= 100.0
    swap = memory["swap"]
    assert swap["total"] >= swap["used"] >= 0
    assert swap["in_per_s"] >= 0 and swap["out_per_s"] >= 0


def test_disks_section_lists_the_root_filesystem_with_inodes(snapshot: dict[str, Any]) -> None:
    partitions = snapshot["disks"]["partitions"]
    assert 1 <= len(partitions) <= 50
    for part in partitions:
        assert part["total"] > 0
        assert part["used"] <= part["total"]
        assert 0.0 <= part["percent"] <= 100.0
        assert isinstance(part["readonly"], bool)
    root = next(part for part in partitions if part["mountpoint"] == "/")
    if root["inodes_total"] is not None:
        assert 0 <= root["inodes_used"] <= root["inodes_total"]
    assert all(not row["device"].startswith("loop") for row in snapshot["disks"]["io"] or [])


def test_network_section_probes_the_controller_and_resolves(
    snapshot: dict[str, Any], listener: int
) -> None:
    network = snapshot["network"]
    assert any(iface["name"] == "lo" for iface in network["interfaces"])
    assert network["resolve"] == {
        "name": "localhost",
        "ok": True,
        "addresses": network["resolve"]["addresses"],
        "error": None,
        "ms": network["resolve"]["ms"],
    }
    assert "127.0.0.1" in network["resolve"]["addresses"]
    controller = network["controller"]
    assert controller["host"] == "127.0.0.1" and controller["port"] == listener
    assert controller["reachable"] is True and controller["failed"] == []
    assert network["default_route"]["available"] is True
    assert isinstance(network["dns"]["servers"], list)
    listening = {(row["proto"], row["port"]) for row in network["listening"]}
    assert ("tcp", listener) in listening
    assert network["listening_count"] >= 1
    assert isinstance(network["connections"], dict)


def test_an_unreachable_controller_and_a_failing_lookup_are_data() -> None:
    with socket.socket() as sock:  # a port nobody listens on: bound, never listening
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        snap = collect_snapshot(
            ["network"], controller_url=f"wss://127.0.0.1:{port}", resolve="nothing.invalid"
        )
    network = snap["network"]
    assert snap["errors"] == {}
    assert network["controller"]["reachable"] is False
    assert network["controller"]["failed"] == ["127.0.0.1"]
    assert network["controller"]["error"]
    assert network["resolve"]["ok"] is False
    assert network["resolve"]["error"]


def test_processes_section_includes_this_test_run(snapshot: dict[str, Any]) -> None:
    processes = snapshot["processes"]
    assert processes["count"] >= 1
    assert sum(processes["by_status"].values()) == processes["count"]
    assert len(processes["zombies"]) == min(processes["zombie_count"], 10)
    for key in ("top_cpu", "top_memory"):
        rows = processes[key]
        assert 1 <= len(rows) <= 5
        assert {"pid", "name", "username", "cmdline", "rss", "cpu_percent"} <= rows[0].keys()
    rss = [row["rss"] for row in processes["top_memory"] if row["rss"] is not None]
    assert rss == sorted(rss, reverse=True)


def test_the_other_sections_say_whether_they_apply_here(snapshot: dict[str, Any]) -> None:
    for name in ("services", "logs", "time", "packages", "battery", "sensors"):
        section = snapshot[name]
        if section.get("available") is False:
            assert section["reason"], name
    if snapshot["time"].get("available"):
        assert snapshot["time"]["synchronized"] in (True, False, None)
    packages = snapshot["packages"]
    if packages.get("available") and not packages.get("checking"):
        assert packages["pending"] >= packages["security"] >= 0


def test_snapshot_round_trips_through_json(snapshot: dict[str, Any]) -> None:
    assert json.loads(json.dumps(snapshot)) == snapshot


# -- selection --------------------------------------------------------------------------


def test_subset_selection_returns_only_those_sections_in_order() -> None:
    snap = collect_snapshot(["processes", "memory", "memory"])
    assert [key for key in snap if key in COLLECTORS] == ["memory", "processes"]
    assert snap["collectors"] == ["memory", "processes"]
    assert snap["errors"] == {}


def test_aliases_select_their_collector() -> None:
    assert canonical(["disk", "NET", " clock "]) == ("disks", "network", "time")
    snap = collect_snapshot(["disk"])
    assert snap["collectors"] == ["disks"]
    assert all(ALIASES[name] == name for name in COLLECTORS)


def test_empty_selection_takes_nothing() -> None:
    snap = collect_snapshot([])
    assert set(snap) == {
        "schema",
        "taken_at",
        "collectors",
        "duration_ms",
        "timings_ms",
        "errors",
    }


def test_unknown_collector_is_refused_with_the_valid_names() -> None:
    with pytest.raises(ValueError, match="bogus") as info:
        collect_snapshot(["memory", "bogus"])
    for name in COLLECTORS:
        assert name in str(info.value)


def test_a_bare_string_is_not_taken_for_a_list_of_names() -> None:
    with pytest.raises(TypeError):
        collect_snapshot("memory")


def test_every_collector_has_a_module_a_summary_and_a_time_limit() -> None:
    from agent.collectors import load

    for name, spec in CATALOGUE.items():
        assert callable(load(name)), name
        assert spec.summary and 0 < spec.timeout <= 5, name


# -- failures, time limits, bounds ------------------------------------------------------


def test_a_failing_collector_is_reported_and_the_others_still_run(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def broken(ctx: Context) -> dict[str, Any]:
        raise PermissionError("denied by policy")

    monkeypatch.setitem(diagnostics._REGISTRY, "disks", broken)
    snap = collect_snapshot(["system", "disks", "memory"])
    assert snap["errors"] == {"disks": "PermissionError: denied by policy"}
    assert "disks" not in snap
    assert isinstance(snap["system"], dict) and isinstance(snap["memory"], dict)
    json.dumps(snap)


def test_a_collector_that_hangs_times_out_as_data(monkeypatch: pytest.MonkeyPatch) -> None:
    release = threading.Event()

    def hangs(ctx: Context) -> dict[str, Any]:
        release.wait(30)
        return {"late": True}

    monkeypatch.setitem(diagnostics._REGISTRY, "network", hangs)
    monkeypatch.setitem(diagnostics.TIMEOUTS, "network", 0.2)
    try:
        snap = collect_snapshot(["memory", "network"])
    finally:
        release.set()
    assert snap["errors"] == {"network": "timed out after 0.2 s"}
    assert "network" not in snap
    assert isinstance(snap["memory"], dict)


def test_error_messages_are_clipped_and_redacted(monkeypatch: pytest.MonkeyPatch) -> None:
    def chatty(ctx: Context) -> dict[str, Any]:
        raise RuntimeError("password=hunter2 " + "x" * 10_000)

    monkeypatch.setitem(diagnostics._REGISTRY, "memory", chatty)
    message = collect_snapshot(["memory"])["errors"]["memory"]
    assert len(message) <= diagnostics.MAX_ERROR
    assert "hunter2" not in message and "password=***" in message


def test_sections_are_bounded_and_made_json_safe(monkeypatch: pytest.MonkeyPatch) -> None:
    def sloppy(ctx: Context) -> dict[str, Any]:
        return {
            "long": "y" * 5000,
            "many": list(range(1000)),
            "nan": float("nan"),
            "object": object(),
            "deep": {"a": {"b": {"c": {"d": {"e": {"f": {"g": {"h": {"i": 1}}}}}}}}},
            "secret": "curl -H 'Authorization: Bearer abcdefgh12345678' https://x",
        }

    monkeypatch.setitem(diagnostics._REGISTRY, "memory", sloppy)
    section = collect_snapshot(["memory"])["memory"]
    assert len(section["long"]) == diagnostics.MAX_TEXT
    assert len(section["many"]) == diagnostics.MAX_ITEMS
    assert section["nan"] is None
    assert section["object"].startswith("<object object")
    assert "abcdefgh12345678" not in section["secret"]
    json.dumps(section, allow_nan=False)


def test_an_oversized_section_is_refused_not_sent(monkeypatch: pytest.MonkeyPatch) -> None:
    def huge(ctx: Context) -> dict[str, Any]:
        return {f"k{i}": ["v" * 1000] * 200 for i in range(200)}

    monkeypatch.setitem(diagnostics._REGISTRY, "memory", huge)
    snap = collect_snapshot(["memory"])
    assert "memory" not in snap
    assert "exceeds" in snap["errors"]["memory"]
