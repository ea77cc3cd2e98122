"""Approved fixes end to end: signed catalogue, the customer's yes or no, results on tickets."""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from controller.catalogue import builtin_dir
from tests.e2e.conftest import Agent, Controller, ssh_keygen, wait_until


@dataclass
class Setup:
    controller: Controller
    tech: dict[str, str]
    senior: dict[str, str]
    ticket: str
    tmp: Path

    def fix(
        self, *args: str, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        return self.controller.cli("fix", self.ticket, *args, check=False, env=env or self.tech)

    def fix_json(self, *args: str) -> tuple[int, dict[str, Any]]:
        import json

        result = self.fix(*args, "--json")
        return result.returncode, json.loads(result.stdout) if result.stdout else {}


def _login(controller: Controller, tmp: Path, name: str, level: str) -> dict[str, str]:
    key = tmp / name
    ssh_keygen(key)
    controller.json("user", "add", name, "--key", f"{key}.pub", "--level", level)
    env = {k: v for k, v in controller.env.items() if k != "HELPLINE_HOME"}
    env["HELPLINE_CLIENT_CONFIG"] = str(tmp / f"{name}.toml")
    pin = controller.json("agent-config", "--out", str(tmp / "pin.toml"))["pin"]
    controller.cli("login", "--url", controller.url, "--pin", pin, "--key", str(key), env=env)
    return env


def _prepare(controller: Controller, tmp: Path) -> tuple[dict[str, str], dict[str, str]]:
    """Publish the built-in catalogue and log in an L1 and an L2 technician."""
    controller.json("fixes", "keygen", "--out", str(tmp / "fixkey"))
    controller.json(
        "fixes",
        "sign",
        str(builtin_dir()),
        "--key",
        str(tmp / "fixkey"),
        "--out",
        str(tmp / "bundle.json"),
        "--serial",
        "100",
    )
    published = controller.json("fixes", "publish", str(tmp / "bundle.json"))
    assert published["key_pinned"] is True
    config = controller.tmp / "agent.toml"  # what the agents join with
    controller.cli("agent-config", "--out", str(config))
    assert "fix_key" in config.read_text()
    return _login(controller, tmp, "tina", "L1"), _login(controller, tmp, "sam", "L2")


@pytest.fixture(scope="module")
def technicians(shared_controller: Controller) -> tuple[dict[str, str], dict[str, str]]:
    return _prepare(shared_controller, shared_controller.tmp)


@pytest.fixture
def setup(
    own_agents: Controller, technicians: tuple[dict[str, str], dict[str, str]], tmp_path: Path
) -> Setup:
    """The module's controller and technicians, with a ticket of the test's own."""
    return Setup(own_agents, *technicians, own_agents.open_ticket(), tmp_path)


def _junk(tmp: Path) -> tuple[Path, Path]:
    root = tmp / "junk"
    root.mkdir()
    old = root / "old.tmp"
    old.write_text("old")
    stamp = datetime.now(UTC).timestamp() - 30 * 86400
    os.utime(old, (stamp, stamp))
    return root, old


def _agent(s: Setup, *extra: str, **kwargs: Any) -> Agent:
    agent = s.controller.start_agent(s.controller.issue_code(s.ticket), *extra, **kwargs)
    s.controller.connected_session(s.ticket)
    return agent


def _answer(agent: Agent, text: str) -> None:
    wait_until(lambda: "Run it?" in agent.output(), 20, "the fix question")
    assert agent.process.stdin is not None
    agent.process.stdin.write(text)
    agent.process.stdin.flush()


def test_customer_says_yes_and_the_result_lands_on_the_ticket(setup: Setup) -> None:
    root, old = _junk(setup.tmp)
    agent = _agent(setup, stdin=subprocess.PIPE)
    fix = subprocess.Popen(
        [
            *_cli(setup),
            "fix",
            setup.ticket,
            "disk.free_space",
            "--param",
            f"root={root}",
            "--param",
            "days=7",
        ],
        env=setup.tech,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    _answer(agent, "y\n")
    out, err = fix.communicate(timeout=60)
    assert fix.returncode == 0, out + err
    assert f"removed {old}" in out  # streamed live from the customer's machine
    assert "disk.free_space succeeded" in out
    assert "Remove old temporary files" in agent.output()  # what the customer was shown
    assert f"root = {root}" in agent.output()
    assert not old.exists()
    shown = setup.controller.json("ticket", "show", setup.ticket)
    fixes = [a for a in shown["attachments"] if a["kind"] == "fix"]
    assert len(fixes) == 1
    assert fixes[0]["data"]["status"] == "succeeded"
    assert fixes[0]["data"]["consent"] == "customer"
    types = [e["type"] for e in setup.controller.json("audit", "log", "--ticket", setup.ticket)]
    for expected in ("fix.proposed", "fix.approved", "fix.finished"):
        assert expected in types


def _cli(setup: Setup) -> list[str]:
    import sys

    return [sys.executable, "-m", "controller"]


def test_customer_says_no(setup: Setup) -> None:
    root, old = _junk(setup.tmp)
    agent = _agent(setup, stdin=subprocess.PIPE)
    fix = subprocess.Popen(
        [*_cli(setup), "fix", setup.ticket, "disk.free_space", "--param", f"root={root}"],
        env=setup.tech,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    _answer(agent, "n\n")
    out, _err = fix.communicate(timeout=60)
    assert fix.returncode == 6
    assert "declined" in out
    assert old.exists()
    assert setup.controller.json("audit", "log", "--type", "fix.declined")


def test_customer_does_not_answer(setup: Setup) -> None:
    root, old = _junk(setup.tmp)
    _agent(setup, stdin=subprocess.PIPE, env={"HELPLINE_FIX_CONSENT_TIMEOUT": "1"})
    code, result = setup.fix_json("disk.free_space", "--param", f"root={root}")
    assert code == 6
    assert result["code"] == "declined"
    assert old.exists()


def test_preapproved_at_join_runs_without_asking(setup: Setup) -> None:
    root, old = _junk(setup.tmp)
    agent = _agent(setup, "--allow", "disk.free_space")
    code, result = setup.fix_json("disk.free_space", "--param", f"root={root}")
    assert code == 0, result
    assert result["consent"] == "preapproved"
    assert "Run it?" not in agent.output()
    assert not old.exists()
    given = setup.controller.json("audit", "log", "--type", "consent.given")
    assert given[-1]["details"]["preapproved"] == ["disk.free_space"]


def test_a_compromised_controller_cannot_swap_the_catalogue(
    controller: Controller, tmp_path: Path
) -> None:
    """The controller accepts a bundle from another key; the agent, pinned, refuses it."""
    # a controller of its own: the forged catalogue must not reach the other tests
    setup = Setup(controller, *_prepare(controller, tmp_path), controller.open_ticket(), tmp_path)
    agent = _agent(setup, "--allow", "disk.free_space")
    forged = setup.tmp / "forged"
    forged.mkdir()
    (forged / "evil").mkdir()
    (forged / "evil" / "fix.toml").write_text(
        'id = "disk.free_space"\ntitle = "Innocent"\ndescription = "Nothing to see."\n'
        'command = ["touch", "/tmp/helpline-owned"]\n'
    )
    setup.controller.json("fixes", "keygen", "--out", str(setup.tmp / "evilkey"))
    setup.controller.json(
        "fixes",
        "sign",
        str(forged),
        "--key",
        str(setup.tmp / "evilkey"),
        "--out",
        str(setup.tmp / "evil.json"),
    )
    setup.controller.json("fixes", "publish", str(setup.tmp / "evil.json"), "--replace-key")
    code, result = setup.fix_json("disk.free_space")
    assert code == 4
    assert result["code"] == "bundle_signature"
    assert not Path("/tmp/helpline-owned").exists()
    assert "refused" in agent.output()
    assert setup.controller.json("audit", "log", "--type", "fix.refused")


def test_refusals_before_anything_reaches_the_customer(setup: Setup) -> None:
    agent = _agent(setup, stdin=subprocess.PIPE)
    low = setup.fix("cpu.stop_runaway", "--param", f"pid={agent.process.pid}")
    assert low.returncode == 4
    assert "escalate" in low.stderr
    missing = setup.fix("format.everything")
    assert missing.returncode == 3
    bad = setup.fix("disk.free_space", "--param", "days=100000")
    assert bad.returncode == 2
    assert "days must be from 0 to 3650" in bad.stderr
    assert "Run it?" not in agent.output()
    refusals = setup.controller.json("audit", "log", "--type", "fix.refused")
    assert {r["details"]["code"] for r in refusals} >= {"level", "bad_param"}


def test_fixes_list_suggests_from_findings(setup: Setup) -> None:
    listed = setup.controller.json("fixes", "list")
    assert len(listed["fixes"]) >= 10
    assert {f["id"] for f in listed["fixes"]} >= {"disk.free_space", "service.restart"}
    senior = setup.controller.cli("fixes", "list", "--for", setup.ticket, env=setup.senior)
    assert senior.returncode == 0


def test_the_ticket_level_gates_deeper_fixes_until_escalated(setup: Setup) -> None:
    import sys

    victim = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    try:
        _agent(setup, "--allow", "cpu.stop_runaway")
        args = ("fix", setup.ticket, "cpu.stop_runaway", "--param", f"pid={victim.pid}")
        early = setup.controller.cli(*args, check=False, env=setup.senior)
        assert early.returncode == 4
        assert "escalate it first" in early.stderr
        setup.controller.cli(
            "ticket",
            "escalate",
            setup.ticket,
            "--to",
            "L2",
            "--reason",
            "needs a process stopped",
            env=setup.senior,
        )
        done = setup.controller.cli(*args, check=False, env=setup.senior)
        assert done.returncode == 0, done.stdout + done.stderr
        assert victim.wait(10) == -15
    finally:
        if victim.poll() is None:
            victim.kill()


def test_an_admin_runs_a_fix_as_an_l3_technician(setup: Setup) -> None:
    # the README's walkthrough: the admin that `init` made proposes the fix itself
    root, old = _junk(setup.tmp)
    agent = _agent(setup, "--allow", "disk.free_space")
    admin = setup.controller.env  # logs in with the key `init` made in the home
    done = setup.fix("disk.free_space", "--param", f"root={root}", "--json", env=admin)
    assert done.returncode == 0, done.stdout + done.stderr
    assert not old.exists()
    proposed = setup.controller.json("audit", "log", "--type", "fix.proposed")[-1]
    assert (proposed["actor"], proposed["role"]) == ("admin", "admin")
    assert proposed["details"]["acting_as"] == "technician L3"
    assert "Run it?" not in agent.output()


def test_a_fix_reports_cleared_only_for_a_finding_that_was_there(setup: Setup) -> None:
    root, _old = _junk(setup.tmp)
    _agent(setup, "--allow", "disk.free_space")
    snapshot = setup.controller.json("diag", setup.ticket, "--only", "disk")
    was_there = any(f["rule"] == "disk.nearly_full" for f in snapshot["findings"])
    code, result = setup.fix_json("disk.free_space", "--param", f"root={root}")
    assert code == 0, result
    check = result["verification"]
    assert check["present_before"] is was_there
    if not was_there and not check["present_after"]:
        assert check["outcome"] == "not present before or after"
        assert check["cleared"] is False
        shown = setup.fix("disk.free_space", "--param", f"root={root}").stdout
        assert "finding disk.nearly_full: not present before or after" in shown
        assert "cleared" not in shown
