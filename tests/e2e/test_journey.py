"""The journey of the README, end to end, with real processes over loopback TLS."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

from tests.conftest import scaled
from tests.e2e.conftest import Controller, wait_until


def test_join_diagnose_attach_leave(controller: Controller) -> None:
    ticket = controller.open_ticket()
    assert ticket == "T-1"
    issued = controller.json("code", ticket)
    assert issued["ticket"] == ticket
    assert len(issued["code"].replace("-", "")) == 10

    agent = controller.start_agent(issued["code"])
    session = controller.connected_session(ticket)
    assert session["scopes"] == ["diagnostics:read", "fixes:propose"]
    assert "technician asks to connect" in agent.output()
    assert "T-1" in agent.output()

    result = controller.json("diag", ticket)
    assert result["ok"] is True
    assert result["data"]["memory"]["total"] > 0
    assert result["data"]["system"]["hostname"]

    shown = controller.json("ticket", "show", ticket)
    assert [a["kind"] for a in shown["attachments"]] == ["diagnostics"]
    assert shown["attachments"][0]["data"]["processes"]["count"] > 0
    assert shown["attachments"][0]["request"] == result["request"]

    human = controller.cli("ticket", "show", ticket).stdout
    assert "diagnostics" in human and "Laptop slow" in human

    # the customer ends it from another terminal
    leave = subprocess.run(
        [sys.executable, "-m", "agent", "leave", "--home", str(agent.home)],
        capture_output=True,
        text=True,
        timeout=scaled(20),
    )
    assert leave.returncode == 0, leave.stderr
    assert agent.wait() == 0
    ended = wait_until(
        lambda: [s for s in controller.json("sessions", "--all") if s["state"] == "ended"],
        10,
        "the session to end",
    )
    assert ended[0]["id"] == session["id"]
    types = [e["type"] for e in controller.json("audit", "log", "--ticket", ticket)]
    for expected in (
        "code.issued",
        "code.used",
        "consent.asked",
        "consent.given",
        "agent.joined",
        "diag.requested",
        "diag.result",
        "consent.revoked",
        "agent.left",
    ):
        assert expected in types, (expected, types)


def test_ctrl_c_ends_the_session(controller: Controller) -> None:
    ticket = controller.open_ticket()
    agent = controller.start_agent(controller.issue_code(ticket))
    controller.connected_session(ticket)
    agent.process.send_signal(signal.SIGINT)
    assert agent.wait() == 0
    assert wait_until(lambda: not controller.json("sessions"), 10, "no live sessions")


def test_controller_killed_mid_request_result_arrives_once(controller: Controller) -> None:
    ticket = controller.open_ticket()
    # the agent takes 3 s to answer, so the controller dies while the reply is in the making
    agent = controller.start_agent(
        controller.issue_code(ticket), env={"HELPLINE_TEST_DIAG_DELAY": "3"}
    )
    controller.connected_session(ticket)
    diag = subprocess.Popen(
        [sys.executable, "-m", "controller", "diag", ticket, "--json"],
        env=controller.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    wait_until(
        lambda: controller.json("audit", "log", "--type", "diag.requested"),
        20,
        "the diagnostics request to reach the controller",
    )
    controller.kill()
    assert diag.wait(scaled(20)) != 0  # the technician is told, not left hanging
    time.sleep(scaled(3.5))  # the agent finishes while no controller is there
    controller.start()
    controller.connected_session(ticket)
    attachments = wait_until(
        lambda: controller.json("ticket", "show", ticket)["attachments"],
        20,
        "the pending result to be delivered after the reconnect",
    )
    assert len(attachments) == 1
    assert attachments[0]["ok"] is True
    # a further reconnect must not deliver it again
    controller.kill()
    controller.start()
    controller.connected_session(ticket)
    assert controller.json("audit", "log", "--type", "agent.reconnected")
    assert len(controller.json("ticket", "show", ticket)["attachments"]) == 1
    assert agent.process.poll() is None, agent.output()
    assert "reconnected" in agent.output()
