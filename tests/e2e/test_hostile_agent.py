"""A malicious or dying agent: what it sends is checked, and what it leaves is recorded.

Real processes over loopback TLS; the malicious agent speaks the real protocol
(``protocol.session.AgentSession``) over a real websocket, as ``test_bad_input`` does.
"""

from __future__ import annotations

import asyncio
import json
import platform
import ssl
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import scaled
from tests.e2e.conftest import Controller
from tests.e2e.test_fixes import Setup, _agent, setup, technicians  # noqa: F401 - fixtures

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "snapshots"


def test_a_huge_parameter_is_still_refused_clipped_and_audited(setup: Setup) -> None:  # noqa: F811
    agent = _agent(setup, "--allow", "disk.free_space")
    huge = "/tmp/" + "a" * 100_000  # under an allowed root, and no such file
    code, result = setup.fix_json("disk.free_space", "--param", f"root={huge}")
    assert code == 4, result
    assert result["code"] == "bad_param"
    assert "does not exist" in result["error"]
    assert "characters, clipped" in result["error"]
    assert len(result["error"]) <= 1000
    refused = setup.controller.json("audit", "log", "--type", "fix.refused")
    assert refused[-1]["details"]["code"] == "bad_param"
    assert len(refused[-1]["details"]["reason"]) <= 1000
    # the agent is alive and still serving
    assert agent.process.poll() is None
    assert "Task exception was never retrieved" not in agent.output()
    assert setup.controller.json("ping", setup.ticket)["ok"] is True


class Forger:
    """A real-protocol agent under the test's control, over a real TLS websocket."""

    def __init__(self, controller: Controller) -> None:
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

        self.controller = controller
        self.key = Ed25519PrivateKey.generate()
        self.pin = controller.json("agent-config", "--out", str(controller.tmp / "pin.toml"))["pin"]
        self.session_id: str | None = None
        self.ws: Any = None
        self.machine: Any = None

    async def connect(self, code: str | None = None) -> None:
        """Join with ``code``, or resume the session joined before."""
        from websockets.asyncio.client import connect

        from protocol import signing
        from protocol.messages import AgentInfo
        from protocol.session import AgentSession, ConsentNeeded, SessionLive

        self.machine = AgentSession(
            public_key=signing.public_key_text(self.key),
            sign=lambda challenge: signing.sign_agent(self.key, challenge, self.pin),
            agent=AgentInfo(hostname="forger", platform=platform.platform(), agent_version="0"),
            code=code,
            session_id=None if code else self.session_id,
        )
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        self.ws = await connect(self.controller.url + "/agent", ssl=context)
        live = False
        while not live:
            for event in await self._events():
                if isinstance(event, ConsentNeeded):
                    self.machine.answer_consent(True)
                if isinstance(event, SessionLive):
                    live, self.session_id = True, event.started.session_id
            await self._flush()

    async def _events(self) -> list[object]:
        from protocol import codec

        frame = await asyncio.wait_for(self.ws.recv(), scaled(30))
        events: list[object] = self.machine.receive(codec.decode(frame))
        return events

    async def _flush(self) -> None:
        from protocol import codec

        for message in self.machine.data_to_send():
            await self.ws.send(codec.encode(message))

    async def request(self, *, ping: bool = False) -> Any:
        """The next request from the controller; pings are answered on the way, and with
        ``ping`` the first one answered is returned."""
        from protocol.messages import Ping, Result
        from protocol.session import RequestReceived

        while True:
            for event in await self._events():
                if isinstance(event, RequestReceived):
                    if not isinstance(event.request, Ping):
                        return event.request
                    self.machine.reply(
                        Result(reply_to=event.request.id, ok=True, produced_at=datetime.now(UTC))
                    )
                    if ping:
                        await self._flush()
                        return event.request
            await self._flush()

    async def reply(self, reply_to: str, data: dict[str, Any], *, ok: bool = True) -> None:
        """Send a result and wait for its acknowledgement."""
        from protocol.messages import Result
        from protocol.session import Acknowledged

        self.machine.reply(
            Result(reply_to=reply_to, ok=ok, data=data, produced_at=datetime.now(UTC))
        )
        await self._flush()
        while True:
            events = await self._events()
            if any(isinstance(e, Acknowledged) and e.request_id == reply_to for e in events):
                return

    async def output(self, reply_to: str, data: str) -> None:
        from protocol.messages import FixOutput

        self.machine.output(FixOutput(reply_to=reply_to, stream="stdout", data=data))
        await self._flush()

    def abort(self) -> None:
        """Die without a word, as a killed process does: no close frame, no end."""
        self.ws.transport.abort()


async def _cli(controller: Controller, *args: str, env: dict[str, str] | None = None) -> Any:
    """Start the real CLI (``--json``); returns the process, to be awaited with _done."""
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "controller",
        *args,
        "--json",
        env=env or controller.env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


async def _done(process: Any) -> tuple[int, Any, str]:
    out, err = await asyncio.wait_for(process.communicate(), scaled(60))
    data = json.loads(out) if out.strip() else None
    return process.returncode, data, err.decode()


def _snapshot(name: str = "base") -> dict[str, Any]:
    data: dict[str, Any] = json.loads((FIXTURES / f"{name}.json").read_text())
    return data


def test_an_unstorable_result_is_refused_and_the_session_lives_on(controller: Controller) -> None:
    ticket = controller.open_ticket()

    async def scenario() -> None:
        forger = Forger(controller)
        await forger.connect(await asyncio.to_thread(controller.issue_code, ticket))
        diag = await _cli(controller, "diag", ticket)
        request = await forger.request()
        await forger.reply(request.id, {"collectors": ["cpu"], "cpu": {"count": 2**64}})
        code, data, err = await _done(diag)
        assert data["ok"] is False, (code, data, err)
        assert "integer outside the 64-bit range" in data["error"]
        assert "data.cpu.count" in data["error"]
        # the same connection still serves: a ping goes through
        ping = await _cli(controller, "ping", ticket)
        _, (code, data, err) = await asyncio.gather(forger.request(ping=True), _done(ping))
        assert code == 0 and data["ok"] is True, err

    asyncio.run(scenario())
    refused = controller.json("audit", "log", "--type", "result.refused")
    assert "64-bit" in refused[-1]["details"]["reason"]
    assert controller.connected_session(ticket)
    shown = controller.json("ticket", "show", ticket)
    assert [a["ok"] for a in shown["attachments"]] == [False]
    assert "Traceback" not in controller.log()


def test_an_empty_partition_does_not_break_diff(controller: Controller) -> None:
    ticket = controller.open_ticket()
    before = _snapshot()
    after = _snapshot()
    after["disks"]["partitions"].append({})
    after["disks"]["partitions"][0] = {}

    async def scenario() -> None:
        forger = Forger(controller)
        await forger.connect(await asyncio.to_thread(controller.issue_code, ticket))
        for snapshot in (before, after):
            diag = await _cli(controller, "diag", ticket)
            request = await forger.request()
            await forger.reply(request.id, snapshot)
            code, _data, err = await _done(diag)
            assert code == 0, err

    asyncio.run(scenario())
    diff = controller.cli("diag", "diff", ticket, "--json", check=False)
    assert diff.returncode == 0, diff.stderr
    assert "internal" not in diff.stderr
    assert set(json.loads(diff.stdout)["findings"]) >= {"resolved", "new", "remaining"}


def _timeline(controller: Controller, ticket: str, kind: str) -> list[dict[str, Any]]:
    shown = controller.json("ticket", "show", ticket)
    return [e for e in shown["timeline"] if e["type"] == kind]


@pytest.mark.parametrize("how", ["killed", "restarted"])
def test_a_fix_that_ends_without_a_result_is_on_the_ticket_with_its_output(
    setup: Setup,  # noqa: F811
    how: str,
) -> None:
    controller = setup.controller

    async def scenario() -> None:
        forger = Forger(controller)
        await forger.connect(await asyncio.to_thread(controller.issue_code, setup.ticket))
        fix = await asyncio.create_subprocess_exec(
            *(sys.executable, "-m", "controller", "fix", setup.ticket, "disk.free_space"),
            *("--param", "root=/tmp"),
            env=setup.tech,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        proposal = await forger.request()
        for n in (1, 2, 3):
            await forger.output(proposal.id, f"removed /tmp/old{n}\n")
        # the technician saw all three: the controller has them
        assert fix.stdout is not None
        seen = b""
        while b"old3" not in seen:
            seen += await asyncio.wait_for(fix.stdout.readline(), scaled(30))
        again = Forger(controller)
        again.key, again.session_id = forger.key, forger.session_id
        if how == "killed":
            forger.abort()
            await again.connect()
        else:  # a new process resumes while the old connection still looks open
            await again.connect()
            forger.abort()
        await asyncio.wait_for(fix.wait(), scaled(60))
        assert fix.returncode == 7  # agent_offline: no result came
        interrupted = await asyncio.to_thread(
            _timeline, controller, setup.ticket, "ticket.fix_interrupted"
        )
        assert len(interrupted) == 1
        data = interrupted[0]["data"]
        assert data["request"] == proposal.id and data["fix"] == "disk.free_space"
        assert [o["data"] for o in data["output"]] == [f"removed /tmp/old{n}\n" for n in (1, 2, 3)]
        reason = "lost" if how == "killed" else "reconnected"
        assert reason in data["reason"]
        # the real result, delivered later from the outbox (twice), is stored once
        result = {"fix": "disk.free_space", "status": "succeeded", "exit_code": 0}
        await again.reply(proposal.id, result)
        await again.reply(proposal.id, result)

    asyncio.run(scenario())
    # the module's controller is shared: this test's ticket only
    audited = controller.json("audit", "log", "--type", "fix.interrupted", "--ticket", setup.ticket)
    assert len(audited) == 1
    assert audited[0]["details"]["output_chunks"] == 3
    fixes = [
        a
        for a in controller.json("ticket", "show", setup.ticket)["attachments"]
        if a["kind"] == "fix"
    ]
    assert len(fixes) == 1
    assert fixes[0]["data"]["status"] == "succeeded"
    finished = controller.json("audit", "log", "--type", "fix.finished", "--ticket", setup.ticket)
    assert len(finished) == 1


def test_a_call_that_outlives_its_failed_connection_leaves_no_trace(
    controller: Controller,
) -> None:
    """A technician's call still waiting on the agent when a bad frame fails the API
    connection: the call ends quietly (nobody to answer) and the agent's silence is an
    ``agent_offline`` answer elsewhere, never an internal error or a lost task."""
    import signal

    from tests import hostile

    ticket = controller.open_ticket()
    agent = controller.start_agent(controller.issue_code(ticket))
    controller.connected_session(ticket)
    pin = controller.json("agent-config", "--out", str(controller.tmp / "pin.toml"))["pin"]
    key = str(controller.home / "admin_ed25519")
    agent.process.send_signal(signal.SIGSTOP)  # the ping below waits for it
    try:

        async def fail_mid_call() -> None:
            ws = await hostile.technician_login(controller.url, key, pin)
            call = {"v": 1, "id": "c1", "type": "call", "method": "agent.ping"}
            await ws.send(json.dumps({**call, "params": {"ticket": ticket}}))
            await ws.send("{not json")
            await asyncio.wait_for(ws.wait_closed(), scaled(10))

        asyncio.run(fail_mid_call())
        stopped = controller.cli("ping", ticket, "--json", check=False)
        assert stopped.returncode == 7, stopped.stderr  # agent_offline, not internal
    finally:
        agent.process.send_signal(signal.SIGCONT)
    log = controller.log()
    assert "Traceback" not in log
    assert "Task exception was never retrieved" not in log
    assert "not allowed in state FAILED" not in log
