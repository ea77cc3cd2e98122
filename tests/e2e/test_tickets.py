"""Tickets under SLA end to end: real controller and agent processes, the real CLI, a real
HTTP receiver on 127.0.0.1 for the webhooks. Waits are bounded; nothing asserts timing."""

from __future__ import annotations

import csv
import io
import os
import pty
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

from controller.tickets import webhooks
from tests.conftest import scaled
from tests.e2e.conftest import Agent, Controller, ControllerFactory, wait_until
from tests.e2e.test_audit import _as_user
from tests.tickets.receiver import receiver


def _err(result: subprocess.CompletedProcess[str]) -> str:
    """A command's error message whole (rich wraps long lines at the terminal width)."""
    return result.stderr.replace("\n", "")


def _audit_types(controller: Controller, ticket: str) -> list[str]:
    return [e["type"] for e in controller.json("audit", "log", "--ticket", ticket)]


def test_a_ticket_through_its_life_from_the_cli(controller: Controller, tmp_path: Path) -> None:
    opened = controller.json(
        "ticket", "open", "--title", "Drucker druckt nicht", "--customer", "ACME",
        "--priority", "P3", "--contact", "Frau Weber, 030 1234", "--channel", "phone",
        "--category", "printing",
    )  # fmt: skip
    t = opened["id"]
    assert (opened["state"], opened["level"], opened["channel"]) == ("new", "L1", "phone")
    assert opened["sla"]["first_response"]["status"] in ("on_track", "at_risk", "breached")
    assert [x["id"] for x in controller.json("ticket", "list", "--state", "new")] == [t]
    assert controller.json("ticket", "list", "--mine") == []
    assert controller.json("ticket", "assign", t)["assignee"] == "admin"
    assert [x["id"] for x in controller.json("ticket", "list", "--mine")] == [t]
    controller.json("ticket", "note", t, "called back: error 49 on the display")
    assert controller.json("ticket", "wait", t, "--reason", "customer restarts it")["state"] == (
        "waiting"
    )
    assert controller.json("ticket", "resume", t)["state"] == "open"

    # bad input: a level that does not exist, L4 without a vendor, an illegal transition
    bad = controller.cli("ticket", "escalate", t, "--to", "L5", "--reason", "x", check=False)
    assert bad.returncode == 2 and "no support level 'L5'" in _err(bad)
    bad = controller.cli("ticket", "escalate", t, "--to", "L4", "--reason", "x", check=False)
    assert bad.returncode == 2 and "--vendor" in _err(bad)
    bad = controller.cli("ticket", "close", t, check=False)
    assert bad.returncode == 8 and "resolve it first" in _err(bad)
    assert controller.cli("ticket", "note", "T-99", "x", check=False).returncode == 3

    up = controller.json("ticket", "escalate", t, "--to", "L2", "--reason", "firmware expertise")
    assert (up["level"], up["assignee"]) == ("L2", "admin")  # admins work any level
    resolved = controller.json(
        "ticket", "resolve", t, "--resolution", "Firmware 2.1 fixed error 49", "--kb"
    )
    assert resolved["state"] == "resolved" and resolved["article"]["id"] == "KB-1"
    assert controller.json("ticket", "close", t)["state"] == "closed"
    bad = controller.cli("ticket", "reopen", t, "--reason", "again", check=False)
    assert bad.returncode == 8 and "closed tickets are final" in _err(bad)
    bad = controller.cli("code", t, check=False)  # no new session on a final record
    assert bad.returncode == 8 and f"--link follows:{t}" in _err(bad)
    follow = controller.json(
        "ticket",
        "open",
        "--title",
        "Drucker wieder",
        "--customer",
        "ACME",
        "--link",
        f"follows:{t}",
    )

    shown = controller.json("ticket", "show", t)
    assert [e["type"] for e in shown["timeline"]] == [
        "ticket.opened", "ticket.assigned", "ticket.noted", "ticket.waiting", "ticket.resumed",
        "ticket.escalated", "ticket.resolved", "ticket.article_written", "ticket.closed",
        "ticket.linked",
    ]  # fmt: skip
    assert shown["timeline"][5]["data"]["reason"] == "firmware expertise"
    assert shown["sla"]["first_response"]["status"] in ("met", "breached")
    assert shown["links"] == [
        {"kind": "followed_by", "ticket": follow["id"], "title": "Drucker wieder", "state": "new"}
    ]
    assert shown["allowed"] == []
    human = controller.cli("ticket", "show", follow["id"]).stdout
    assert "Drucker wieder" in human and "follows" in human and "KB-1" in human  # suggested

    hits = controller.json("kb", "search", "firmware", "49")
    assert [h["id"] for h in hits] == ["KB-1"] and hits[0]["ticket"] == t
    assert controller.json("kb", "show", "KB-1")["body"] == "Firmware 2.1 fixed error 49"
    assert controller.cli("kb", "show", "KB-9", check=False).returncode == 3

    types = _audit_types(controller, t)
    for expected in ("ticket.opened", "ticket.assigned", "ticket.escalated"):
        assert expected in types
    # wait, resume, resolve, close (new → open came with the assignment)
    assert types.count("ticket.state_changed") == 4

    # the auditor reads everything and changes nothing
    env = _as_user(controller, tmp_path, "olga", "--role", "auditor")
    assert controller.cli("ticket", "show", t, "--json", env=env).returncode == 0
    assert controller.cli("report", "--json", env=env).returncode == 0
    for args in (("ticket", "note", t, "hi"), ("kb", "add", "--title", "x", "--body", "y"),
                 ("webhook", "add", "http://127.0.0.1:9/x")):  # fmt: skip
        assert controller.cli(*args, check=False, env=env).returncode == 4, args


def test_sla_policy_breach_auto_escalation_and_a_bad_policy_file(
    make_controller: ControllerFactory, tmp_path: Path
) -> None:
    controller = make_controller(env={"HELPLINE_SLA_INTERVAL": "0.2"})
    policy = controller.home / "sla.toml"
    controller.stop()
    policy.write_text('at_risk = 0.5\n[priorities.P1]\nfirst_response = "1h"\nresolutoin = "3s"\n')
    failed = controller.cli("serve", "--home", str(controller.home), check=False)
    assert failed.returncode == 2
    assert "sla.toml line 4: unknown key 'resolutoin'" in _err(failed)
    check = controller.cli("sla", "check", "--file", str(policy), check=False)
    assert check.returncode == 2 and "line 4" in _err(check)
    policy.write_text(
        'at_risk = 0.5\n[priorities.P1]\nfirst_response = "1h"\nresolution = "3s"\n'
        'escalate_at_risk = "L2"\n'
    )
    assert controller.json("sla", "check", "--file", str(policy))["priorities"]["P1"] == {
        "calendar": "24/7",
        "first_response_s": 3600,
        "resolution_s": 3,
        "escalate_at_risk": "L2",
    }
    controller.start()
    assert controller.json("sla", "show")["source"] == str(policy)
    t = controller.json(
        "ticket", "open", "--title", "Server down", "--customer", "ACME", "--priority", "P1"
    )["id"]
    quiet = controller.json("ticket", "open", "--title", "Question", "--customer", "B")["id"]

    breached = wait_until(
        lambda: controller.json("ticket", "list", "--sla", "breached"), 20, "the P1 to breach"
    )
    assert [x["id"] for x in breached] == [t]
    shown = wait_until(
        lambda: (s := controller.json("ticket", "show", t))["level"] == "L2" and s,
        20,
        "the policy to escalate the ticket",
    )
    types = [e["type"] for e in shown["timeline"]]
    assert "ticket.sla_at_risk" in types and "ticket.escalated" in types
    escalated = next(e for e in shown["timeline"] if e["type"] == "ticket.escalated")
    assert escalated["actor"] == "sla-policy" and escalated["data"]["auto"] is True
    audit = controller.json("audit", "log", "--ticket", t, "--type", "ticket.escalated")
    assert audit[0]["actor"] == "sla-policy"
    assert controller.json("ticket", "show", quiet)["level"] == "L1"  # P3: no target here
    assert [x["id"] for x in controller.json("ticket", "list", "--sla", "none")] == [quiet]


def test_webhooks_reach_a_helpdesk_that_was_down(make_controller: ControllerFactory) -> None:
    controller = make_controller(
        env={
            "HELPLINE_WEBHOOK_BACKOFF_BASE": "0.05",
            "HELPLINE_WEBHOOK_BACKOFF_MAX": "0.3",
            "HELPLINE_WEBHOOK_POLL": "0.1",
        }
    )
    with socket.socket() as probe:  # nobody listens here yet: connection refused
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    hook = controller.json("webhook", "add", f"http://127.0.0.1:{port}/helpline")
    secret = hook["secret"]
    t = controller.open_ticket()
    controller.json("ticket", "note", t, "on it")
    controller.json("ticket", "resolve", t, "--resolution", "rebooted")
    failing = wait_until(
        lambda: [h for h in controller.json("webhook", "list") if h["failures"] >= 2],
        20,
        "delivery attempts to fail",
    )
    assert failing[0]["pending"] == 3 and "refused" in failing[0]["last_error"].lower()
    log = controller.json("webhook", "log", "--ticket", t)
    assert [x["type"] for x in log] == ["ticket.opened", "ticket.noted", "ticket.resolved"]
    assert all(x["delivered_at"] is None for x in log)

    # the helpdesk comes back, and still fails one request in three for a while
    with receiver(lambda n: 503 if n % 3 == 2 and n < 6 else 200, port=port) as rx:
        got = rx.wait_for(3, scaled(20))
        controller.json("ticket", "reopen", t, "--reason", "it is back")
        got = rx.wait_for(4, scaled(20))
    timeline = [e["id"] for e in controller.json("ticket", "show", t)["timeline"]]
    assert got == timeline  # everything, once each at least, in order
    assert all(r.signed_with(secret) for r in rx.stored)
    assert [r.event["type"] for r in rx.stored][-1] == "ticket.reopened"
    assert all(x["delivered_at"] for x in controller.json("webhook", "log", "--ticket", t))
    assert controller.json("audit", "log", "--type", "webhook.added")[0]["actor"] == "admin"
    assert rx.stored[0].headers[webhooks.EVENT.lower()] == "ticket.opened"


def _read_until(path: Path, text: str, seconds: float = 20) -> None:
    wait_until(lambda: text in path.read_text(), seconds, f"{text!r} in {path.name}")


def _answer_rating(agent: Agent, terminal: int, score: bytes, comment: bytes) -> None:
    """The customer at ``terminal`` answers the agent's two rating questions."""
    _read_until(agent.log, "Rate the support from 1 (poor) to 5 (great)")
    os.write(terminal, score + b"\n")
    _read_until(agent.log, "Anything to add?")
    os.write(terminal, comment + b"\n")
    assert agent.wait() == 0


def test_the_customer_rates_after_the_technician_ends_the_session(
    controller: Controller,
) -> None:
    ticket = controller.open_ticket()
    master, slave = pty.openpty()  # the customer's terminal
    try:
        agent = controller.start_agent(controller.issue_code(ticket), yes=False, stdin=slave)
        _read_until(agent.log, "Allow? [y/N]")
        os.write(master, b"y\n")
        session = controller.connected_session(ticket)
        ended = controller.json("end-session", ticket, "--reason", "printer works again")
        assert ended["ended"] == [{"session": session["id"], "connected": True}]
        # the session is over at once, before the customer answers
        assert controller.cli("ping", ticket, check=False).returncode == 7
        _read_until(agent.log, "session ended: printer works again")
        _answer_rating(agent, master, b"5", b"")
    finally:
        os.close(master)
        os.close(slave)
    shown = controller.json("ticket", "show", ticket)
    assert [(r["score"], r["comment"]) for r in shown["ratings"]] == [(5, None)]
    [audited] = controller.json("audit", "log", "--type", "session.ended", "--ticket", ticket)
    assert (audited["actor"], audited["details"]["reason"]) == ("admin", "printer works again")
    assert not [s for s in controller.json("sessions") if s["ticket"] == ticket]

    # unattended, nobody is asked and the agent goes at once; an offline session is ended
    # in the store so that it can never resume
    quiet = controller.start_agent(controller.issue_code(ticket), name="quiet")
    controller.connected_session(ticket)
    controller.json("end-session", ticket)
    assert quiet.wait() == 0
    assert "Rate the support" not in quiet.output()
    offline = controller.start_agent(controller.issue_code(ticket), name="offline")
    controller.connected_session(ticket)
    offline.process.kill()
    offline.wait()
    wait_until(
        lambda: not any(s["connected"] for s in controller.json("sessions")),
        20,
        "the killed agent to drop",
    )
    assert controller.json("end-session", ticket)["ended"][0]["connected"] is False
    resumed = subprocess.run(
        [sys.executable, "-m", "agent", "resume", "--config", str(controller.agent_config()),
         "--home", str(offline.home)],
        env=controller.env, capture_output=True, text=True, timeout=scaled(30),
    )  # fmt: skip
    assert resumed.returncode == 4, resumed.stdout + resumed.stderr
    nothing = controller.cli("end-session", ticket, check=False)
    assert nothing.returncode == 3 and "has no open session" in _err(nothing)
    assert len(controller.json("ticket", "show", ticket)["ratings"]) == 1


def test_the_customer_rates_the_session_when_leaving(controller: Controller) -> None:
    ticket = controller.open_ticket()
    master, slave = pty.openpty()  # the customer's terminal
    try:
        agent = controller.start_agent(controller.issue_code(ticket), yes=False, stdin=slave)
        _read_until(agent.log, "Allow? [y/N]")
        os.write(master, b"y\n")
        controller.connected_session(ticket)
        agent.process.send_signal(signal.SIGINT)  # Ctrl-C: the customer leaves
        _answer_rating(agent, master, b"4", b"Schnell und freundlich")
    finally:
        os.close(master)
        os.close(slave)
    shown = controller.json("ticket", "show", ticket)
    [rating] = shown["ratings"]
    assert (rating["score"], rating["comment"], rating["technician"]) == (
        4,
        "Schnell und freundlich",
        "admin",
    )
    types = [e["type"] for e in shown["timeline"]]
    assert types[:2] == ["ticket.opened", "ticket.session_started"]
    assert "ticket.rated" in types
    assert shown["state"] == "open" and shown["responded_at"]  # the session was a response

    # unattended (--yes): Ctrl-C ends the session at once, nobody is asked
    second = controller.start_agent(controller.issue_code(ticket), name="unattended")
    wait_until(
        lambda: len([s for s in controller.json("sessions") if s["connected"]]) == 1,
        20,
        "the second agent to connect",
    )
    second.process.send_signal(signal.SIGINT)
    assert second.wait() == 0
    assert "Rate the support" not in second.output()
    assert len(controller.json("ticket", "show", ticket)["ratings"]) == 1

    report: dict[str, Any] = controller.json("report", "--since", "1h")
    assert report["total"]["satisfaction"] == {"ratings": 1, "mean": 4.0, "satisfied": 1.0}
    assert report["total"]["opened"] == 1
    rows = list(csv.DictReader(io.StringIO(controller.cli("report", "--csv").stdout)))
    assert rows[-1]["group"] == "total" and rows[-1]["satisfaction_mean"] == "4.0"
