"""The technician's view: findings, a snapshot (real, partial, malformed) and a diff."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

from rich.console import Console

from agent.diagnostics import collect_snapshot
from controller.cli.render import (
    render_diagnostics,
    render_diff,
    render_findings,
    render_snapshot,
)
from controller.findings import compare, evaluate
from controller.units import humanize_bytes, humanize_duration

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "snapshots"


def _fixture(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((FIXTURES / f"{name}.json").read_text())
    return data


def _console(color: bool = False) -> tuple[Console, io.StringIO]:
    out = io.StringIO()
    console = Console(
        file=out, width=120, force_terminal=color, color_system="truecolor" if color else None
    )
    return console, out


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
    assert "Top processes by CPU" in text
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


def test_findings_come_first_most_severe_first_and_coloured() -> None:
    snap = _fixture("before_fix")
    console, out = _console(color=True)
    render_diagnostics(console, snap, evaluate(snap))
    text = out.getvalue()
    assert text.index("Findings:") < text.index("details") < text.index("Disks")
    assert text.index("CRITICAL") < text.index("WARNING")
    assert "\x1b[1;31m● CRITICAL" in text  # critical in bold red
    assert "Disk / is 97.5 % full" in text
    assert "suggested fix: " in text and "disk.free_space" in text
    assert "Failed services" in text and "cups.service" in text


def test_no_findings_says_so() -> None:
    console, out = _console()
    render_findings(console, [])
    assert "no findings" in out.getvalue()


def test_the_details_show_network_and_state_lines() -> None:
    snap = _fixture("no_default_route")
    snap["packages"].update(pending=4, security=1)
    console, out = _console()
    render_snapshot(console, snap)
    text = out.getvalue()
    assert "no default route" in text
    assert "no DNS servers" in text
    assert "lookup intranet.acme.example failed" in text
    assert "support server reachable" in text
    assert "4 updates pending (1 security)" in text
    assert "Inodes" in text


def test_finding_text_is_not_taken_as_markup() -> None:
    console, out = _console()
    render_findings(
        console,
        [
            {"severity": "bogus", "title": "[bold]x[/]", "evidence": ["[link=file:///]e[/]", 3]},
            "not a finding",
        ],
    )
    text = out.getvalue()
    assert "[bold]x[/]" in text and "[link=file:///]e[/]" in text


def test_a_diff_shows_resolved_findings_and_changed_values() -> None:
    diff = compare(_fixture("before_fix"), _fixture("healthy"))
    diff.update(
        ticket="T-7",
        before={"attachment": 3, "taken_at": "2026-11-24T05:00:00+00:00"},
        after={"attachment": 5, "taken_at": "2026-11-24T05:30:00+00:00"},
    )
    console, out = _console()
    render_diff(console, diff)
    text = out.getvalue()
    assert "T-7: snapshot #3" in text and "→ #5" in text
    assert "✓ resolved" in text and "Disk / is 97.5 % full" in text
    assert "What changed" in text
    assert "97.5 %" in text and "22.3 %" in text
    assert "- cups.service" in text


def test_an_empty_or_broken_diff_does_not_crash() -> None:
    console, out = _console()
    render_diff(console, {"findings": "x", "changes": [None, {"kind": "set", "added": 5}]})
    render_diff(console, {})
    assert "no findings before or after" in out.getvalue()


def test_a_partial_snapshot_names_what_it_holds() -> None:
    snap = {k: v for k, v in _fixture("healthy").items() if k not in ("system", "cpu", "memory")}
    snap["collectors"] = ["disks", "network"]
    text = _render(snap)
    assert "partial snapshot: disks, network" in text
    assert "unknown host" not in text and "no CPU or memory figures" not in text
    assert "Disks" in text and "Network" in text
