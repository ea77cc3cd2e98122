"""The README's walkthrough where a new user tripped: the real CLI, as a person reads it."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

from controller.catalogue import builtin_dir
from tests.e2e.conftest import Controller, wait_until


def _publish_builtin(controller: Controller, tmp: Path) -> None:
    controller.json("fixes", "keygen", "--out", str(tmp / "fixkey"))
    controller.json(
        "fixes", "sign", str(builtin_dir()), "--key", str(tmp / "fixkey"), "--out",
        str(tmp / "bundle.json"),
    )  # fmt: skip
    controller.json("fixes", "publish", str(tmp / "bundle.json"))


def test_init_on_an_existing_home_is_a_conflict(shared_controller: Controller) -> None:
    controller = shared_controller
    config = (controller.home / "controller.toml").read_bytes()
    again = controller.cli("init", "--url", controller.url, "--home", str(controller.home),
                           check=False)  # fmt: skip
    assert again.returncode == 8, again.stdout + again.stderr
    assert "already holds a controller" in again.stderr
    assert "HomeError" not in again.stderr
    assert (controller.home / "controller.toml").read_bytes() == config  # untouched


def test_ping_prints_round_trip_times(own_agents: Controller) -> None:
    controller = own_agents
    ticket = controller.open_ticket()
    controller.start_agent(controller.issue_code(ticket))
    controller.connected_session(ticket)
    one = controller.cli("ping", ticket).stdout
    assert re.fullmatch(rf"pong from {ticket}: [\d.]+ ms \(controller to agent [\d.]+ ms\)\n", one)
    many = controller.cli("ping", ticket, "--count", "3", "--interval", "0").stdout.splitlines()
    assert len(many) == 4 and many[0].startswith(f"pong from {ticket}: ")
    assert re.fullmatch(r"3 round trips: min [\d.]+ ms, median [\d.]+ ms, max [\d.]+ ms", many[3])
    stats = controller.json("ping", ticket, "--count", "3", "--interval", "0")
    assert stats["count"] == 3 and stats["ok"] is True
    assert len(stats["trips"]) == 3
    assert stats["min_ms"] <= stats["median_ms"] <= stats["max_ms"]
    assert all(t["agent_ms"] is not None and t["agent_ms"] >= 0 for t in stats["trips"])


def test_identifiers_are_never_cut_at_80_columns(own_agents: Controller, tmp_path: Path) -> None:
    controller = own_agents
    _publish_builtin(controller, tmp_path)
    ticket = controller.open_ticket()
    controller.start_agent(controller.issue_code(ticket))
    session = controller.connected_session(ticket)
    controller.json("diag", ticket, "--only", "disk")
    narrow = {**controller.env, "COLUMNS": "80"}

    def shown(*args: str) -> str:
        out = controller.cli(*args, env=narrow).stdout
        assert max(len(line) for line in out.splitlines()) <= 80, out
        assert "…" not in out, out
        return out

    fixes = shown("fixes", "list", "--for", ticket)
    for fix in controller.json("fixes", "list")["fixes"]:
        assert f" {fix['id']} " in fixes, fix["id"]
    audit = shown("audit", "log", "--ticket", ticket)
    for event in ("diag.requested", "diag.result", "consent.given", "ticket.state_changed"):
        assert f" {event} " in audit, event
    sessions = shown("sessions")
    assert f" {session['id']} " in sessions
    assert "left out at 80 columns: agent" in sessions


def test_the_readme_walkthrough_as_written(controller: Controller, tmp_path: Path) -> None:
    """Sections 1-7 in order, as the admin that `init` made (HELPLINE_HOME set)."""
    # 2. the catalogue first, then what the agent needs
    _publish_builtin(controller, tmp_path)
    config = tmp_path / "agent.toml"
    controller.cli("agent-config", "--out", str(config))
    # 3. a ticket and a code
    opened = controller.json(
        "ticket", "open", "--title", "Laptop slow", "--customer", "ACME", "--priority", "P2"
    )
    ticket = opened["id"]
    # 4. the customer joins with the config (pip-installed agent)
    agent = controller.start_agent(
        controller.issue_code(ticket), config=config, stdin=subprocess.PIPE
    )
    controller.connected_session(ticket)
    # 5. diagnose
    assert controller.json("diag", ticket)["ok"] is True
    # 6. the admin proposes a fix; the customer says yes
    controller.cli("fixes", "list", "--for", ticket)
    junk = tmp_path / "junk"
    junk.mkdir()
    old = junk / "old.tmp"
    old.write_text("old")
    stamp = datetime.now(UTC).timestamp() - 30 * 86400
    os.utime(old, (stamp, stamp))
    fix = subprocess.Popen(
        [sys.executable, "-m", "controller", "fix", ticket, "disk.free_space",
         "--param", f"root={junk}", "--param", "days=14"],
        env=controller.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        wait_until(lambda: "Run it?" in agent.output(), 30, "the fix question")
        assert "admin (L3)" in agent.output()  # who asks, as the customer sees it
        assert agent.process.stdin is not None
        agent.process.stdin.write("y\n")
        agent.process.stdin.flush()
        out, err = fix.communicate(timeout=120)
    finally:
        if fix.poll() is None:
            fix.kill()
    assert fix.returncode == 0, out + err
    assert "disk.free_space succeeded" in out
    assert not old.exists()
    # 7. audit
    assert controller.json("audit", "log", "--ticket", ticket)
    controller.cli("audit", "verify")
