"""The technician's view of a snapshot, from a real one and from partial ones."""

from __future__ import annotations

import io
from typing import Any

from rich.console import Console

from agent.diagnostics import collect_snapshot
from controller.render import humanize_bytes, humanize_duration, render_snapshot


def _render(snapshot: dict[str, Any], *, color: bool = False) -> str:
    out = io.StringIO()
    console = Console(
        file=out, width=120, force_terminal=color, color_system="truecolor" if color else None
    )
    render_snapshot(console, snapshot)
    return out.getvalue()


def test_real_snapshot_shows_every_part() -> None:
    snap = collect_snapshot()
    text = _render(snap)
    assert snap["system"]["hostname"] in text
    assert snap["system"]["os"] in text
    assert "up " in text
    assert "CPU" in text and "Memory" in text and "Swap" in text
    assert "Disks" in text
    assert snap["disks"]["partitions"][0]["mountpoint"] in text
    assert "Top processes by CPU time" in text
    assert "Top processes by memory" in text
    assert str(snap["processes"]["top_memory"][0]["pid"]) in text


def test_partial_snapshot_with_errors_renders_what_it_has() -> None:
    snap = {
        "taken_at": "2026-01-01T00:00:00+00:00",
        "memory": {"total": 8 * 1024**3, "used": 2 * 1024**3, "percent": 25.0},
        "errors": {"processes": "PermissionError: denied"},
    }
    text = _render(snap)
    assert "unknown host" in text
    assert "2.0 GiB / 8.0 GiB (25.0 %)" in text
    assert "collector processes failed: PermissionError: denied" in text
    assert "Disks" not in text
    assert "Top processes" not in text


def test_empty_and_malformed_snapshots_do_not_crash() -> None:
    assert "no CPU or memory figures" in _render({})
    text = _render(
        {
            "system": {"hostname": 42, "uptime_seconds": "soon"},
            "cpu": {"percent": None, "load_avg": ["x", 1]},
            "disks": {"partitions": [None, {"mountpoint": "/m"}]},
            "processes": {"top_cpu": "nope", "top_memory": [{"pid": True}]},
            "errors": ["not", "a", "mapping"],
        }
    )
    assert "unknown host" in text
    assert "/m" in text
    assert "load ? 1.00" in text


def test_disk_usage_is_coloured_by_threshold() -> None:
    parts = [
        {"mountpoint": f"/d{p}", "used": p, "total": 100, "percent": float(p)} for p in (50, 85, 95)
    ]
    text = _render({"disks": {"partitions": parts}}, color=True)
    yellow, red = "\x1b[33m", "\x1b[31m"
    assert f"{yellow}85.0 %" in text
    assert f"{red}95.0 %" in text
    assert f"{yellow}50.0 %" not in text and f"{red}50.0 %" not in text


def test_untrusted_text_is_not_taken_as_markup() -> None:
    snap = {"system": {"hostname": "[bold red]evil[/]"}, "errors": {"x": "[link=file:///]y[/]"}}
    text = _render(snap)
    assert "[bold red]evil[/]" in text
    assert "[link=file:///]y[/]" in text


def test_humanizers() -> None:
    assert humanize_bytes(0) == "0 B"
    assert humanize_bytes(1536) == "1.5 KiB"
    assert humanize_bytes(None) == "—"
    assert humanize_duration(42) == "42 s"
    assert humanize_duration(3 * 3600 + 5 * 60 + 7) == "3 h 5 min"
    assert humanize_duration(2 * 86400 + 60) == "2 d"
    assert humanize_duration(90061) == "1 d 1 h"
