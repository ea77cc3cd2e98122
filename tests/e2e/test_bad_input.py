"""Bad input end to end: each gets a clear error, loses nothing, and the server keeps serving."""

from __future__ import annotations

import asyncio
import json
import ssl
import subprocess
import sys
import time
from pathlib import Path

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from protocol import codec
from tests.conftest import scaled
from tests.e2e.conftest import Controller, ssh_keygen, wait_until


def _codes_failed(controller: Controller) -> list[str]:
    return [
        e["details"]["reason"] for e in controller.json("audit", "log", "--type", "code.failed")
    ]


def test_wrong_code_is_refused_and_audited(controller: Controller) -> None:
    controller.open_ticket()
    agent = controller.start_agent("ABCDE-FGHJK")
    assert agent.wait() == 4
    assert "not valid" in agent.output()
    assert controller.json("sessions", "--all") == []
    assert _codes_failed(controller) == ["unknown"]


@pytest.mark.parametrize("typed", ["12345", "not a code at all", "ABCDE-FGHJU", "7KQ2M-9XD4R0"])
def test_a_malformed_code_is_refused_by_the_agent_before_dialling(
    controller: Controller, typed: str
) -> None:
    agent = controller.start_agent(typed)
    assert agent.wait() == 2
    assert "is not a session code: a session code is 10 letters and digits" in agent.output()
    # nothing reached the controller: none of the customer's attempts was used up
    assert _codes_failed(controller) == []
    assert "agent.key" not in {p.name for p in (controller.tmp / "agent").glob("*")}


def test_expired_code_is_refused(controller: Controller) -> None:
    ticket = controller.open_ticket()
    code = controller.json("code", ticket, "--lifetime", "1s")["code"]
    time.sleep(scaled(1.5))
    agent = controller.start_agent(code)
    assert agent.wait() == 4
    assert "expired" in agent.output()
    assert _codes_failed(controller) == ["expired"]
    assert controller.json("sessions", "--all") == []


def test_a_second_agent_on_the_same_state_is_refused(controller: Controller) -> None:
    ticket, other = controller.open_ticket(), controller.open_ticket()
    first = controller.start_agent(controller.issue_code(ticket), name="shared")
    controller.connected_session(ticket)
    code = controller.issue_code(other)
    second = controller.start_agent(code, name="shared")  # the same state directory
    assert second.wait() == 2
    assert "is already running from" in second.output()
    assert first.process.poll() is None
    controller.connected_session(ticket)
    # refused before it dialled: the code was not spent and still works elsewhere
    controller.start_agent(code, name="elsewhere")
    controller.connected_session(other)


def test_reused_code_is_refused(controller: Controller) -> None:
    ticket = controller.open_ticket()
    code = controller.issue_code(ticket)
    controller.start_agent(code, name="first")
    controller.connected_session(ticket)
    second = controller.start_agent(code, name="second")
    assert second.wait() == 4
    assert "already used" in second.output()
    assert _codes_failed(controller) == ["used"]
    assert len(controller.json("sessions")) == 1


def test_failed_codes_are_rate_limited(controller: Controller) -> None:
    for attempt in range(6):
        agent = controller.start_agent("ABCDE-FGHJK", name=f"guess{attempt}")
        assert agent.wait() == 4
    assert "too many failed" in agent.output()
    assert controller.json("audit", "log", "--type", "code.rate_limited")


def test_unpinned_certificate_is_refused(controller: Controller, tmp_path: Path) -> None:
    ticket = controller.open_ticket()
    code = controller.issue_code(ticket)
    wrong = tmp_path / "wrong.toml"
    wrong.write_text(f'url = "{controller.url}"\npin = "{"ab" * 32}"\n')
    agent = controller.start_agent(code, config=wrong)
    assert agent.wait() == 5
    assert "does not match the pinned fingerprint" in agent.output()
    # fail closed: nothing was sent, so the code is still unused
    assert controller.json("audit", "log", "--type", "code.used") == []
    good = controller.start_agent(code, name="good")
    controller.connected_session(ticket)
    assert good.process.poll() is None


def test_customer_says_no(controller: Controller) -> None:
    ticket = controller.open_ticket()
    agent = controller.start_agent(controller.issue_code(ticket), yes=False, stdin=subprocess.PIPE)
    assert agent.process.stdin is not None
    agent.process.stdin.write("n\n")
    agent.process.stdin.flush()
    assert agent.wait() == 6
    assert "declined" in agent.output()
    assert controller.json("sessions", "--all") == []
    assert controller.json("audit", "log", "--type", "consent.refused")


def test_ticket_that_does_not_exist(controller: Controller) -> None:
    for args in (("code", "T-99"), ("diag", "T-99"), ("ticket", "show", "T-99")):
        result = controller.cli(*args, check=False)
        assert result.returncode == 3, args
        assert "no ticket T-99" in result.stderr
    assert controller.cli("code", "banana", check=False).returncode == 2


def test_technician_key_not_enrolled(controller: Controller, tmp_path: Path) -> None:
    key = tmp_path / "stranger"
    ssh_keygen(key)
    pin = controller.json("agent-config", "--out", str(tmp_path / "a.toml"))["pin"]
    env = {k: v for k, v in controller.env.items() if k != "HELPLINE_HOME"}
    result = controller.cli(
        "login", "--url", controller.url, "--pin", pin, "--key", str(key), check=False, env=env
    )
    assert result.returncode == 4
    assert "not enrolled" in result.stderr
    failures = controller.json("audit", "log", "--type", "auth.failed")
    assert failures[-1]["details"]["reason"] == "key not enrolled"


def test_agent_key_mismatch_on_reconnect(controller: Controller) -> None:
    ticket = controller.open_ticket()
    agent = controller.start_agent(controller.issue_code(ticket))
    controller.connected_session(ticket)
    agent.process.kill()
    agent.process.wait()
    # another key in the same state directory: it must not be able to take the session over
    (agent.home / "agent.key").unlink()
    resume = subprocess.run(
        [
            sys.executable,
            "-m",
            "agent",
            "resume",
            "--config",
            str(controller.agent_config()),
            "--home",
            str(agent.home),
        ],
        env=controller.env,
        capture_output=True,
        text=True,
        timeout=scaled(30),
    )
    assert resume.returncode == 4, resume.stdout + resume.stderr
    assert "does not match" in resume.stdout
    refused = controller.json("audit", "log", "--type", "agent.resume_refused")
    assert refused[-1]["details"]["reason"] == "key_mismatch"


async def _raw_agent_frame(controller: Controller, frame: str | bytes) -> tuple[int, str, list]:
    """Open a raw TLS websocket to /agent, send one frame, return the close code and frames."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    received = []
    async with connect(controller.url + "/agent", ssl=context, max_size=None) as ws:
        received.append(json.loads(await ws.recv()))  # hello
        await ws.send(frame)
        try:
            while True:
                received.append(json.loads(await asyncio.wait_for(ws.recv(), scaled(10))))
        except ConnectionClosed:
            pass
        assert ws.close_code is not None
        return ws.close_code, ws.close_reason or "", received


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        ("{not json", "malformed_frame"),
        ('{"type": "launch_missiles", "v": 1, "id": "x"}', "unknown_type"),
        ('{"type": "ping", "v": 1, "id": "x"}', "remote_protocol_error"),
        ("x" * (1 << 20 + 1), "frame_too_large"),
    ],
    ids=["malformed", "unknown-type", "wrong-state", "oversized"],
)
def test_bad_frames_close_only_that_connection(
    controller: Controller, frame: str, code: str
) -> None:
    ticket = controller.open_ticket()
    controller.start_agent(controller.issue_code(ticket))
    controller.connected_session(ticket)
    close_code, reason, received = asyncio.run(_raw_agent_frame(controller, frame))
    assert received[0]["type"] == "hello"
    if code == "frame_too_large":
        # refused by websockets before it is buffered whole: 1009, "message too big";
        # this peer has not joined, so the small pre-login limit applies
        assert close_code == 1009, (close_code, reason)
        assert f"exceeds limit of {codec.PREAUTH_MAX_FRAME} bytes" in reason, reason
    else:
        assert close_code == 1002
        assert received[-1]["type"] == "error" and received[-1]["code"] == code
    # the live agent on the same server is unaffected
    assert controller.json("diag", ticket)["ok"] is True
    errors = controller.json("audit", "log", "--type", "protocol.error")
    assert errors[-1]["details"]["code"] == code


def test_not_an_endpoint(controller: Controller) -> None:
    async def attempt() -> str:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        try:
            async with connect(controller.url + "/shell", ssl=context):
                return "connected"
        except Exception as exc:
            return str(exc)

    assert "404" in asyncio.run(attempt())


def test_tls_below_1_3_is_refused(controller: Controller) -> None:
    async def attempt() -> str:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        context.maximum_version = ssl.TLSVersion.TLSv1_2
        try:
            async with connect(controller.url + "/agent", ssl=context):
                return "connected"
        except (ssl.SSLError, OSError) as exc:
            return f"refused: {exc}"

    assert asyncio.run(attempt()).startswith("refused")


def test_customer_does_not_answer(controller: Controller) -> None:
    ticket = controller.open_ticket()
    agent = controller.start_agent(
        controller.issue_code(ticket),
        yes=False,
        stdin=subprocess.PIPE,
        env={"HELPLINE_CONSENT_TIMEOUT": "1"},
    )
    assert agent.wait() == 6
    assert "No answer" in agent.output()
    assert controller.json("sessions", "--all") == []


async def _forged_result(controller: Controller, code: str, reply_to: str) -> None:
    """A second, real-protocol agent that joins with its own code and then answers a request
    of another session: the controller must not attach it to the other ticket."""
    import platform
    from datetime import UTC, datetime

    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from protocol import codec, signing
    from protocol.messages import AgentInfo, Result
    from protocol.session import AgentSession, ConsentNeeded, SessionLive

    key = Ed25519PrivateKey.generate()
    pin = controller.json("agent-config", "--out", str(controller.tmp / "pin.toml"))["pin"]
    machine = AgentSession(
        public_key=signing.public_key_text(key),
        sign=lambda challenge: signing.sign_agent(key, challenge, pin),
        agent=AgentInfo(hostname="forger", platform=platform.platform(), agent_version="0"),
        code=code,
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    async with connect(controller.url + "/agent", ssl=context) as ws:
        live = False
        while not live:
            for event in machine.receive(codec.decode(await ws.recv())):
                if isinstance(event, ConsentNeeded):
                    machine.answer_consent(True)
                live = live or isinstance(event, SessionLive)
            for message in machine.data_to_send():
                await ws.send(codec.encode(message))
        forged = Result(
            reply_to=reply_to, ok=True, data={"owned": True}, produced_at=datetime.now(UTC)
        )
        machine.reply(forged)
        for message in machine.data_to_send():
            await ws.send(codec.encode(message))
        ack = codec.decode(await asyncio.wait_for(ws.recv(), scaled(10)))
        assert ack.type == "ack"


def test_a_result_for_another_sessions_request_is_refused(controller: Controller) -> None:
    victim = controller.open_ticket("Victim")
    controller.start_agent(controller.issue_code(victim), env={"HELPLINE_TEST_DIAG_DELAY": "5"})
    controller.connected_session(victim)
    diag = subprocess.Popen(
        [sys.executable, "-m", "controller", "diag", victim, "--json"],
        env=controller.env,
        stdout=subprocess.PIPE,
        text=True,
    )
    requested = wait_until(
        lambda: controller.json("audit", "log", "--type", "diag.requested"),
        20,
        "the victim's request",
    )
    request_id = requested[-1]["details"]["request_id"]
    other = controller.open_ticket("Attacker")
    asyncio.run(_forged_result(controller, controller.issue_code(other), request_id))
    refused = controller.json("audit", "log", "--type", "result.refused")
    assert refused[-1]["details"]["request_id"] == request_id
    assert diag.wait(scaled(30)) == 0  # the real answer still arrives
    attachments = controller.json("ticket", "show", victim)["attachments"]
    assert len(attachments) == 1
    assert "owned" not in attachments[0]["data"]
