"""Diagnostics end to end: collectors, findings, selection, diff and redaction.

A real controller and a real agent over TLS on 127.0.0.1, driven through the real CLI.
The agent looks up ``HELPLINE_DIAG_RESOLVE``, set here to a name under ``.invalid`` (RFC
6761: never resolves), so one finding is certain on any machine.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from protocol.collectors import COLLECTORS
from tests.conftest import scaled
from tests.e2e.conftest import Controller, wait_until

UNRESOLVABLE = "helpline-e2e.invalid"
SECRET = "hunter2-e2e-secret"
TOKEN = "tok-3e2e-9f1c"


def _join(controller: Controller) -> str:
    ticket = controller.open_ticket("Internet is slow")
    controller.start_agent(
        controller.issue_code(ticket), env={"HELPLINE_DIAG_RESOLVE": UNRESOLVABLE}
    )
    controller.connected_session(ticket)
    return ticket


def test_snapshot_findings_selection_and_diff(controller: Controller) -> None:
    ticket = _join(controller)

    full = controller.json("diag", ticket)
    assert full["ok"] is True
    data = full["data"]
    assert data["collectors"] == list(COLLECTORS)
    for name in COLLECTORS:  # each section is there, or its failure is (as data)
        assert isinstance(data.get(name), dict) or name in data["errors"], name
    # the second path to the controller: a fresh TCP connection to its port
    assert data["network"]["controller"]["reachable"] is True
    assert data["network"]["controller"]["port"] == controller.port
    assert data["network"]["resolve"]["name"] == UNRESOLVABLE
    rules = [f["rule"] for f in full["findings"]]
    assert "network.dns_failing" in rules
    dns = next(f for f in full["findings"] if f["rule"] == "network.dns_failing")
    assert UNRESOLVABLE in dns["title"]
    assert dns["fix"] == "network.reset_dns"
    assert dns["explanation"] and dns["evidence"]
    ranks = {"critical": 0, "warning": 1, "info": 2}
    order = [ranks[f["severity"]] for f in full["findings"]]
    assert order == sorted(order)
    assert sum(full["summary"].values()) == len(full["findings"])

    only = controller.json("diag", ticket, "--only", "disk,network")
    assert only["data"]["collectors"] == ["disks", "network"]
    assert "processes" not in only["data"] and "system" not in only["data"]
    assert only["data"]["disks"]["partitions"]

    bad = controller.cli("diag", ticket, "--only", "disk,bogus", check=False)
    assert bad.returncode == 2
    assert "bogus" in bad.stderr

    # for people: findings first, then the details
    human = controller.cli("diag", ticket).stdout
    assert "Findings:" in human
    assert f"Name lookups fail ({UNRESOLVABLE})" in human
    assert human.index("Findings:") < human.index("details") < human.index("Disks")
    assert "suggested fix: network.reset_dns" in human

    # every snapshot is on the ticket, with its findings
    shown = controller.json("ticket", "show", ticket)
    snapshots = [a for a in shown["attachments"] if a["kind"] == "diagnostics"]
    assert len(snapshots) == 3
    assert all("network.dns_failing" in [f["rule"] for f in a["findings"]] for a in snapshots)
    human_show = controller.cli("ticket", "show", ticket).stdout
    assert "Findings:" in human_show and "Name lookups fail" in human_show

    # the last two: --only disk,network, then the full one
    diff = controller.json("diag", "diff", ticket)
    assert diff["before"]["attachment"] == snapshots[1]["id"]
    assert diff["after"]["attachment"] == snapshots[2]["id"]
    assert diff["before"]["collectors"] == ["disks", "network"]
    remaining = [f["rule"] for f in diff["findings"]["remaining"]]
    assert "network.dns_failing" in remaining
    assert not diff["findings"]["resolved"]
    chosen = controller.json(
        "diag", "diff", ticket, "--from", str(snapshots[0]["id"]), "--to", str(snapshots[2]["id"])
    )
    assert chosen["before"]["attachment"] == snapshots[0]["id"]
    assert "Name lookups fail" in controller.cli("diag", "diff", ticket).stdout
    missing = controller.cli("diag", "diff", ticket, "--from", "999", "--to", "1", check=False)
    assert missing.returncode == 3

    requested = controller.json("audit", "log", "--type", "diag.requested")
    assert [e["details"]["collectors"] for e in requested][:2] == [["all"], ["disks", "network"]]


def test_diff_after_a_partial_snapshot_calls_nothing_unchecked_new(
    controller: Controller,
) -> None:
    ticket = _join(controller)
    controller.json("diag", ticket, "--only", "disk,network")
    full = controller.json("diag", ticket)
    diff = controller.json("diag", "diff", ticket)
    assert diff["before"]["collectors"] == ["disks", "network"]
    compared = {"disks", "network"}

    def about(finding: dict[str, object]) -> object:
        return finding["subject"] if finding["section"] == "errors" else finding["section"]

    assert all(about(f) in compared for f in diff["findings"]["new"]), diff["findings"]["new"]
    unchecked = [f for f in full["findings"] if about(f) not in compared]
    assert len(diff["findings"]["not_compared"]) == len(unchecked)
    assert all(f["seen_in"] == "after" for f in diff["findings"]["not_compared"])
    shown = controller.cli("diag", "diff", ticket).stdout
    assert ("not compared" in shown) == bool(unchecked)


def test_diff_needs_two_snapshots_and_list_needs_no_controller(controller: Controller) -> None:
    ticket = controller.open_ticket()
    lone = controller.cli("diag", "diff", ticket, check=False)
    assert lone.returncode == 3
    assert "needs two" in lone.stderr
    listed = json.loads(controller.cli("diag", "--list", "--json").stdout)
    assert [row["name"] for row in listed] == list(COLLECTORS)
    assert "disk" in next(row for row in listed if row["name"] == "disks")["aliases"]
    assert controller.cli("diag", ticket, "--list").returncode == 0
    offline = controller.cli("diag", ticket, check=False)
    assert offline.returncode == 7  # no agent connected


def test_secrets_in_command_lines_never_leave_the_machine(
    controller: Controller, tmp_path: Path
) -> None:
    ticket = _join(controller)
    # the largest process on the machine (so it is in the top by memory), with secrets in
    # its command line the way careless scripts pass them
    hog = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; ballast = b'x' * (512 << 20); sys.stdin.read(); time.sleep(60)",
            f"--password={SECRET}",
            f"api_token={TOKEN}",
            "Authorization: Bearer abcdefghijklmnop",
        ],
        stdin=subprocess.PIPE,
        text=True,
    )
    try:

        def big_enough() -> bool:
            import psutil

            return bool(psutil.Process(hog.pid).memory_info().rss > 400 << 20)

        wait_until(big_enough, 20, "the test process to grow")
        out = controller.cli("diag", ticket, "--only", "processes", "--json").stdout
        row = next(
            p for p in json.loads(out)["data"]["processes"]["top_memory"] if p["pid"] == hog.pid
        )
        assert "--password=***" in row["cmdline"]
        assert "api_token=***" in row["cmdline"]
        assert "Bearer ***" in row["cmdline"]
        stored = controller.cli("ticket", "show", ticket, "--json").stdout
        for secret in (SECRET, TOKEN, "abcdefghijklmnop"):
            assert secret not in out
            assert secret not in stored
    finally:
        hog.kill()
        hog.wait(scaled(10))


def test_diag_shows_knowledge_base_articles_beside_findings(controller: Controller) -> None:
    """A resolution written up for a finding comes back the next time that finding shows."""
    first = controller.open_ticket("Disk warning")
    agent = controller.start_agent(controller.issue_code(first), name="first")
    controller.connected_session(first)
    findings = controller.json("diag", first)["findings"]
    agent.process.terminate()
    agent.wait()
    if not findings:
        pytest.skip("this machine shows no findings to write an article about")
    controller.cli(
        "ticket",
        "resolve",
        first,
        "--resolution",
        "Cleared it with the usual steps",
        "--kb-title",
        "What to do about this machine's warnings",
    )
    second = controller.open_ticket("Same again")
    controller.start_agent(controller.issue_code(second), name="second")
    controller.connected_session(second)
    result = controller.json("diag", second)
    titles = [a["title"] for a in result["articles"]]
    assert "What to do about this machine's warnings" in titles
    human = controller.cli("diag", second).stdout
    assert "knowledge base" in human and "KB-1" in human
