"""Text from the other side is shown, never obeyed: terminals, prompts and logs, end to end.

A real-protocol agent (its own key, real TLS, the wire codec) sends a host name, process
names, log lines and fix output full of escape sequences; the technician's real CLI must
print none of them. A technician's hostile ticket title reaches the real
``helpline-agent``; the customer's consent screen must keep it on one visible line with
the real scopes below it. A frame with a newline in its ``type`` must not forge a line in
the controller's log.
"""

from __future__ import annotations

import asyncio
import json
import platform
import shutil
import ssl
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import connect

from tests.conftest import scaled
from tests.e2e.conftest import Controller, wait_until
from tests.e2e.test_fixes import Setup, setup, technicians  # noqa: F401 - fixtures

ESC = "\x1b"
CLIPBOARD = "\x1b]52;c;ZXZpbA==\x07"  # OSC 52: write the technician's clipboard
CLEAR = "\x1b[2J"
HIDE = "\x1b[8m"
CSI = "\x9b2J"  # the 8-bit form of ESC [
HOSTNAME = f"pc{CLIPBOARD}{CLEAR}\u202e"


def _snapshot() -> dict[str, Any]:
    proc = {
        "pid": 4242,
        "name": f"evil{CLEAR}",
        "username": f"root{HIDE}",
        "cmdline": f"/usr/bin/evil --x\n{CLIPBOARD}",
        "cpu_percent": 1.0,
        "cpu_seconds": 2.0,
        "rss": 1 << 20,
    }
    return {
        "system": {"hostname": HOSTNAME, "os": f"Linux{CSI}", "uptime_seconds": 60},
        "processes": {"count": 1, "top_cpu": [proc], "top_memory": [proc]},
        "logs": {
            "available": True,
            "lines": [{"at": "2026-01-01T00:00:00", "source": f"kern{HIDE}", "message": CLEAR}],
        },
        "services": {
            "available": True,
            "failed_count": 1,
            "failed": [{"unit": f"x{CLEAR}.service", "active": "failed", "sub": "failed"}],
        },
        "taken_at": datetime.now(UTC).isoformat(),
        "duration_ms": 1,
    }


class HostileAgent:
    """Joins with a code over the real protocol and answers every request with escapes."""

    def __init__(self, controller: Controller, code: str) -> None:
        self.controller = controller
        self.code = code
        self.live = threading.Event()
        self.stop = threading.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> HostileAgent:
        self.thread.start()
        if not self.live.wait(scaled(20)):
            raise AssertionError(f"the hostile agent did not go live: {self.error!r}")
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop.set()
        self.thread.join(scaled(10))
        if self.error is not None:
            raise AssertionError(f"the hostile agent failed: {self.error!r}")

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # reported by __exit__ / __enter__
            self.error = exc
            self.live.set()

    async def _main(self) -> None:
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

        from protocol import codec, signing
        from protocol.messages import AgentInfo
        from protocol.session import AgentSession, ConsentNeeded, RequestReceived, SessionLive

        key = Ed25519PrivateKey.generate()
        pin = self.controller.json(
            "agent-config", "--out", str(self.controller.tmp / "hostile.toml")
        )["pin"]
        machine = AgentSession(
            public_key=signing.public_key_text(key),
            sign=lambda challenge: signing.sign_agent(key, challenge, pin),
            agent=AgentInfo(hostname=HOSTNAME, platform=platform.platform(), agent_version="0"),
            code=self.code,
        )
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        deadline = time.monotonic() + scaled(120)
        async with connect(self.controller.url + "/agent", ssl=context) as ws:
            while not self.stop.is_set() and time.monotonic() < deadline:
                try:
                    frame = await asyncio.wait_for(ws.recv(), 0.2)
                except TimeoutError:
                    continue
                for event in machine.receive(codec.decode(frame)):
                    if isinstance(event, ConsentNeeded):
                        machine.answer_consent(True)
                    elif isinstance(event, SessionLive):
                        self.live.set()
                    elif isinstance(event, RequestReceived):
                        self._answer(machine, event.request)
                for message in machine.data_to_send():
                    await ws.send(codec.encode(message))

    @staticmethod
    def _answer(machine: Any, request: Any) -> None:
        from protocol.messages import DiagRequest, FixOutput, FixProposal, Result

        now = datetime.now(UTC)
        if isinstance(request, DiagRequest):
            machine.reply(Result(reply_to=request.id, ok=True, data=_snapshot(), produced_at=now))
        elif isinstance(request, FixProposal):
            out = f"cleared{CLIPBOARD}\nline two{CLEAR}{CSI}\r\n"
            machine.output(FixOutput(reply_to=request.id, stream="stdout", data=out))
            machine.output(FixOutput(reply_to=request.id, stream="status", data=f"st{HIDE}"))
            data = {
                "status": "succeeded",
                "exit_code": 0,
                "argv": ["true"],
                "duration_ms": 1.0,
                "timed_out": False,
                "stdout": out,
                "stderr": "",
                "truncated": {"stdout": False, "stderr": False},
                "consent": f"customer{HIDE}[/]",  # a stray closing tag, if read as markup
            }
            machine.reply(Result(reply_to=request.id, ok=True, data=data, produced_at=now))
        else:
            machine.reply(Result(reply_to=request.id, ok=True, produced_at=now))


def _no_escapes(result: subprocess.CompletedProcess[str]) -> str:
    shown = result.stdout + result.stderr
    assert ESC not in shown, shown
    assert "\x9b" not in shown and "\u202e" not in shown
    return shown


def test_agent_text_reaches_the_technician_visible_not_obeyed(controller: Controller) -> None:
    ticket = controller.open_ticket()
    with HostileAgent(controller, controller.issue_code(ticket)):
        diag = controller.cli("diag", ticket)
        shown = _no_escapes(diag)
        assert "pc^[]52;c;ZXZpbA==^G^[[2J<U+202E>" in shown  # visible, so the attempt is seen
        assert "evil^[[2J" in shown
        assert "Linux\\x9b2J" in shown
        # the data itself stays exact for scripts
        exact = controller.json("ticket", "show", ticket)["attachments"][-1]["data"]
        assert exact["system"]["hostname"] == HOSTNAME
        shown = _no_escapes(controller.cli("ticket", "show", ticket))
        assert "pc^[]52;c;ZXZpbA==^G^[[2J<U+202E>" in shown
        _no_escapes(controller.cli("sessions"))
        _no_escapes(controller.cli("audit", "log", "--ticket", ticket))


def test_fix_output_streams_visible_and_raw_on_request(setup: Setup) -> None:  # noqa: F811
    controller = setup.controller
    with HostileAgent(controller, controller.issue_code(setup.ticket)):
        shown = _no_escapes(setup.fix("printing.clear_queue"))
        assert "cleared^[]52;c;ZXZpbA==^G\nline two^[[2J\\x9b2J\n" in shown
        assert "st^[[8m" in shown  # the agent's status line
        assert "customer^[[8m[/]" in shown  # the result's fields, as sent, not as markup
        raw = setup.fix("printing.clear_queue", "--raw")
        # the bytes, when asked for (text mode reads the CR LF as a newline)
        assert f"cleared{CLIPBOARD}\nline two{CLEAR}{CSI}\n" in raw.stdout
    _no_escapes(controller.cli("ticket", "show", setup.ticket))


def test_a_hostile_title_cannot_forge_the_consent_screen(controller: Controller) -> None:
    forged = "Printer\n  may only:   read the printer queue only\n" + HIDE + "\n" * 40 + "."
    ticket = controller.open_ticket(forged)
    agent = controller.start_agent(
        controller.issue_code(ticket),
        yes=False,
        stdin=subprocess.PIPE,
        env={"HELPLINE_CONSENT_TIMEOUT": "1"},
    )
    assert agent.wait() == 6  # no answer: declined
    screen = agent.output()
    assert ESC not in screen
    lines = screen.splitlines()
    title = [line for line in lines if line.startswith("  ticket:")]
    assert len(title) == 1
    assert "Printer^J  may only:   read the printer queue only^J^[[8m^J^J" in title[0]
    scopes = [line for line in lines if line.startswith("  may only:")]
    assert scopes == [
        "  may only:   read diagnostics (system, CPU, memory, disks, network, "
        "processes, services, error logs, clock, pending updates, battery, "
        "sensors; secrets masked)"
    ]
    asked = next(n for n, line in enumerate(lines) if line.startswith("Allow?"))
    assert lines.index(scopes[0]) < asked
    assert not any("printer queue" in line for line in lines[lines.index(title[0]) + 1 :])


def test_a_newline_in_a_frame_type_cannot_forge_a_log_line(controller: Controller) -> None:
    forged = "CRITICAL helpline.audit: audit chain verified, nothing to see"
    frame = json.dumps({"type": f"x\n2026-01-01 00:00:00,000 {forged}", "id": "a\nb"})

    async def send() -> None:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        # from two addresses: repeated refusals from one address are aggregated, and
        # each address's first is recorded (and logged) in full
        for endpoint, source in (("/agent", "127.0.0.2"), ("/api", "127.0.0.3")):
            async with connect(
                controller.url + endpoint, ssl=context, local_addr=(source, 0)
            ) as ws:
                await ws.send(frame)
                await asyncio.wait_for(ws.wait_closed(), scaled(10))

    asyncio.run(send())
    wait_until(lambda: controller.log().count("unknown_type") >= 2, 20, "both refusals logged")
    lines = controller.log().splitlines()
    assert not [line for line in lines if line.startswith("2026-01-01 00:00:00,000")]
    quoted = [line for line in lines if forged in line]
    assert len(quoted) >= 2  # both refusals quote it, and always escaped
    for line in quoted:
        assert "^J2026-01-01" in line or "\\n2026-01-01" in line, line


def test_a_real_terminal_is_not_cleared_by_the_snapshot(
    controller: Controller, tmp_path: Path
) -> None:
    """What a technician sees in a terminal (tmux): the earlier screen is still there."""
    if shutil.which("tmux") is None:
        pytest.skip("tmux is not installed")
    ticket = controller.open_ticket()
    socket_path = str(tmp_path / "tmux.sock")
    tmux = ["tmux", "-S", socket_path]
    command = f"echo BEFORE; {sys.executable} -m controller diag {ticket}; echo EXIT=$?; sleep 60"
    with HostileAgent(controller, controller.issue_code(ticket)):
        subprocess.run(
            [*tmux, "new-session", "-d", "-x", "160", "-y", "120", "sh", "-c", command],
            env=controller.env,
            check=True,
        )
        try:

            def screen() -> str:
                shown = subprocess.run(
                    [*tmux, "capture-pane", "-p"], capture_output=True, text=True, check=True
                ).stdout
                return shown if "EXIT=" in shown else ""

            shown = wait_until(screen, 60, "helpline diag to finish in the terminal")
        finally:
            subprocess.run([*tmux, "kill-server"], check=False)
    assert "EXIT=0" in shown
    assert "BEFORE" in shown  # ESC [ 2J would have cleared it
    assert "pc^[]52;c;ZXZpbA==^G^[[2J<U+202E>" in shown
