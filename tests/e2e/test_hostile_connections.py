"""A hostile network against a real ``helpline serve``: silent connections, floods, busy callers.

Each test reproduces one attack from the hostile-world review on real processes over TLS
on loopback, and checks that a real agent and the real CLI carry on through it. Sources
other than 127.0.0.1 are other loopback addresses (127.0.0.0/8 all reach the controller),
so per-address limits are exercised without leaving the machine.
"""

from __future__ import annotations

import asyncio
import json
import resource
import signal
import socket
import ssl
import subprocess
import sys
import time
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from controller.client import ClientError, ClientSettings, Connection
from protocol import codec, signing
from protocol.api import ReplyReceived
from protocol.machine import Refused
from protocol.messages import AgentInfo
from protocol.session import AgentSession, ConsentNeeded, SessionLive
from tests.conftest import scaled
from tests.e2e.conftest import Controller, ControllerFactory, free_port, wait_until

#: short deadlines so that the tests wait seconds, not minutes
FAST = {"HELPLINE_LOGIN_TIMEOUT": "4", "HELPLINE_REPORT_INTERVAL": "1"}


def _tls() -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


async def _silent(url: str, source: str = "127.0.0.1") -> ClientConnection:
    """A websocket that completes the handshake and then says nothing (pings off)."""
    return await connect(
        url,
        ssl=_tls(),
        ping_interval=None,
        open_timeout=scaled(30),
        local_addr=(source, 0),
    )


def _pin(controller: Controller) -> str:
    return str(controller.json("agent-config", "--out", str(controller.tmp / "pin.toml"))["pin"])


def _admin(controller: Controller) -> ClientSettings:
    return ClientSettings(
        url=controller.url, pin=_pin(controller), key=str(controller.home / "admin_ed25519")
    )


def _events_total(rows: list[dict[str, Any]]) -> int:
    """How many events some audit rows stand for: one each, or the count they aggregate."""
    return sum(row["details"].get("aggregated", 1) for row in rows)


def _join_real_agent(controller: Controller, ticket: str) -> None:
    """A real ``helpline-agent`` joins and a technician's CLI sees it: service as usual."""
    controller.start_agent(controller.issue_code(ticket), name=f"agent-{ticket}")
    session = controller.connected_session(ticket)
    assert session["ticket"] == ticket


async def _raw_agent(
    controller: Controller,
    pin: str,
    key: Ed25519PrivateKey,
    *,
    code: str | None = None,
    session_id: str | None = None,
    source: str = "127.0.0.1",
    consent: bool = True,
    replay: str | None = None,
) -> tuple[str, str]:
    """The agent's side of the real protocol, from ``source``.

    Returns what happened ("live", "consent" when told not to answer, or the refusal code)
    and the join/resume frame it made; ``replay`` is sent in place of that frame.
    """
    machine = AgentSession(
        public_key=signing.public_key_text(key),
        sign=lambda challenge: signing.sign_agent(key, challenge, pin),
        agent=AgentInfo(hostname="raw", platform="test", agent_version="0"),
        code=code,
        session_id=session_id,
    )
    made = ""
    async with await _silent(controller.url + "/agent", source) as ws:
        try:
            async with asyncio.timeout(scaled(30)):
                while True:
                    for event in machine.receive(codec.decode(await ws.recv())):
                        if isinstance(event, ConsentNeeded):
                            if not consent:
                                return "consent", made
                            machine.answer_consent(True)
                        elif isinstance(event, SessionLive):
                            return "live", made
                        elif isinstance(event, Refused):
                            return event.code, made
                    for message in machine.data_to_send():
                        frame = codec.encode(message)
                        if message.type in ("join", "resume"):
                            made, frame = frame, replay or frame
                        await ws.send(frame)
        except ConnectionClosed:
            return "closed", made


def test_silent_connections_are_closed_while_agents_and_technicians_carry_on(
    make_controller: ControllerFactory,
) -> None:
    controller = make_controller(env=FAST)
    ticket = controller.open_ticket()

    async def scenario() -> list[tuple[int | None, str | None]]:
        silent = await asyncio.gather(
            *(_silent(controller.url + path) for path in ("/agent", "/api") for _ in range(60))
        )
        # the silent ones are open; a real agent joins and the CLI works meanwhile
        await asyncio.to_thread(_join_real_agent, controller, ticket)
        async with asyncio.timeout(scaled(60)):
            for ws in silent:
                await ws.wait_closed()
        return [(ws.close_code, ws.close_reason) for ws in silent]

    closes = asyncio.run(scenario())
    assert closes == [(1008, "log in within 4 s")] * 120
    # one row for the first, then one per interval with a count: not 120 rows
    wait_until(
        lambda: (
            _events_total(controller.json("audit", "log", "--type", "connection.timed_out")) == 120
        ),
        20,
        "all 120 timeouts to be counted",
    )
    rows = controller.json("audit", "log", "--type", "connection.timed_out")
    assert len(rows) < 120
    assert rows[0]["source"] == "127.0.0.1"
    # the agent that logged in was not closed with them
    assert controller.connected_session(ticket)["connected"] is True


def test_waiting_connections_are_capped_per_address(make_controller: ControllerFactory) -> None:
    controller = make_controller(
        env={"HELPLINE_PREAUTH_PER_SOURCE": "20", "HELPLINE_LOGIN_TIMEOUT": "60"}
    )
    ticket = controller.open_ticket()

    async def scenario() -> tuple[int, list[int]]:
        held: list[ClientConnection] = []
        refused: list[int] = []
        for _ in range(30):
            try:
                held.append(await _silent(controller.url + "/api", "127.0.0.2"))
            except InvalidStatus as exc:
                refused.append(exc.response.status_code)
        # 127.0.0.2 is at its cap; an agent and a technician from 127.0.0.1 are not
        await asyncio.to_thread(_join_real_agent, controller, ticket)
        for ws in held:
            await ws.close()
        return len(held), refused

    held, refused = asyncio.run(scenario())
    assert (held, refused) == (20, [503] * 10)
    rows = controller.json("audit", "log", "--type", "connection.refused")
    assert rows[0]["source"] == "127.0.0.2"
    assert "from this address" in rows[0]["details"]["reason"]


def test_an_anonymous_large_frame_is_refused_before_it_is_buffered(
    controller: Controller,
) -> None:
    ticket = controller.open_ticket()

    async def anonymous() -> tuple[int | None, str | None]:
        async with connect(controller.url + "/api", ssl=_tls(), max_size=None) as ws:
            await ws.recv()  # the challenge
            await ws.send("x" * (1 << 20))
            try:
                async with asyncio.timeout(scaled(20)):
                    while True:
                        await ws.recv()
            except ConnectionClosed:
                pass
            return ws.close_code, ws.close_reason

    code, reason = asyncio.run(anonymous())
    assert code == 1009
    assert f"exceeds limit of {codec.PREAUTH_MAX_FRAME} bytes" in (reason or "")
    [error] = controller.json("audit", "log", "--type", "protocol.error")
    assert error["details"]["endpoint"] == "api"
    assert error["details"]["code"] == "frame_too_large"

    async def logged_in() -> str:
        # after authentication the API's own limit applies: the frame reaches the handler
        async with Connection(_admin(controller)) as connection:
            try:
                await connection.call("ticket.note", {"ticket": ticket, "text": "x" * (1 << 20)})
            except ClientError as exc:
                return f"{exc.code}: {exc.message}"
        return "accepted"

    assert (
        asyncio.run(logged_in()) == "bad_request: text: String should have at most 20000 characters"
    )


async def _burst(connection: Connection, method: str, params: dict[str, Any], n: int) -> list[Any]:
    """Send ``n`` calls at once on one connection; the replies in arrival order."""
    ids = [connection.machine.call(method, params) for _ in range(n)]
    await connection._flush()
    replies: list[Any] = []
    async with asyncio.timeout(scaled(60)):
        while len(replies) < n:
            for event in await connection._receive():
                if isinstance(event, ReplyReceived) and event.reply.reply_to in ids:
                    replies.append(event.reply)
    return replies


def test_concurrent_calls_are_bounded(controller: Controller) -> None:
    ticket = controller.open_ticket()
    agent = controller.start_agent(controller.issue_code(ticket))
    controller.connected_session(ticket)

    async def heavy() -> list[str]:
        async with Connection(_admin(controller)) as connection:
            replies = await _burst(connection, "audit.verify", {}, 6)
            return ["ok" if r.ok else str(r.error_code) for r in replies]

    # one audit.verify per user at a time; the others are refused at once, not queued
    outcomes = asyncio.run(heavy())
    assert set(outcomes) == {"ok", "busy"}, outcomes

    async def many_pings() -> list[str]:
        async with Connection(_admin(controller)) as connection:
            ids = [connection.machine.call("agent.ping", {"ticket": ticket}) for _ in range(10)]
            await connection._flush()
            outcomes: dict[str, str] = {}
            async with asyncio.timeout(scaled(60)):
                while len(outcomes) < len(ids):
                    for event in await connection._receive():
                        if isinstance(event, ReplyReceived):
                            reply = event.reply
                            outcomes[str(reply.reply_to)] = (
                                "ok" if reply.ok else str(reply.error_code)
                            )
                    if len(outcomes) == 2:
                        # both refusals came while 8 pings wait on the stopped agent
                        agent.process.send_signal(signal.SIGCONT)
            return [outcomes[i] for i in ids]

    # the agent cannot answer: every ping stays in flight until SIGCONT
    agent.process.send_signal(signal.SIGSTOP)
    try:
        outcomes = asyncio.run(many_pings())
    finally:
        agent.process.send_signal(signal.SIGCONT)
    assert outcomes == ["ok"] * 8 + ["busy"] * 2


def test_bad_codes_from_many_addresses_do_not_lock_out_a_customer(
    controller: Controller,
) -> None:
    ticket = controller.open_ticket()
    pin = _pin(controller)
    # 25 addresses, 6 guesses each at once: 125 failures, over the global bound of 100
    sources = [f"127.0.1.{n}" for n in range(1, 26)]
    gate = asyncio.Semaphore(25)

    async def guess(source: str) -> str:
        async with gate:
            outcome, _ = await _raw_agent(
                controller, pin, Ed25519PrivateKey.generate(), code="ABCDE-FGHJK", source=source
            )
            return outcome

    async def guesses() -> list[list[str]]:
        per_source = [asyncio.gather(*(guess(s) for _ in range(6))) for s in sources]
        return list(await asyncio.gather(*per_source))

    for outcomes in asyncio.run(guesses()):
        # the 6th waited for the 5 in flight, and then the address was over its limit
        assert sorted(outcomes) == ["code_unknown"] * 5 + ["rate_limited"], outcomes
    failed = controller.json("audit", "log", "--type", "code.failed", "--limit", "1000")
    assert len(failed) == 125
    # the global bound slows checks down; it refuses nobody: a customer still joins
    _join_real_agent(controller, ticket)


def test_simultaneous_valid_joins_are_not_counted_as_failures(controller: Controller) -> None:
    ticket = controller.open_ticket()
    pin = _pin(controller)

    async def scenario() -> list[str]:
        async with Connection(_admin(controller)) as connection:
            codes = [
                (await connection.call("code.issue", {"ticket": ticket}))["code"] for _ in range(15)
            ]
        # 15 at once from one address, three times its failure budget
        return list(
            await asyncio.gather(
                *(
                    _raw_agent(
                        controller,
                        pin,
                        Ed25519PrivateKey.generate(),
                        code=code,
                        source="127.0.0.3",
                        consent=False,
                    )
                    for code in codes
                )
            )
        )

    outcomes = [outcome for outcome, _ in asyncio.run(scenario())]
    assert outcomes == ["consent"] * 15
    assert controller.json("audit", "log", "--type", "code.rate_limited") == []


def test_a_replayed_resume_is_refused_and_audited(make_controller: ControllerFactory) -> None:
    controller = make_controller(env=FAST)
    ticket = controller.open_ticket()
    key = Ed25519PrivateKey.generate()
    pin, code = _pin(controller), controller.issue_code(ticket)

    async def scenario() -> tuple[str, list[str]]:
        outcome, _ = await _raw_agent(controller, pin, key, code=code)
        assert outcome == "live"
        sessions = await asyncio.to_thread(controller.json, "sessions")
        [session] = [s for s in sessions if s["ticket"] == ticket]
        # a resume captured on the wire is bound to its connection's challenge
        outcome, captured = await _raw_agent(controller, pin, key, session_id=session["id"])
        assert outcome == "live"
        replays = [
            await _raw_agent(
                controller,
                pin,
                key,
                session_id=session["id"],
                source="127.0.0.5",
                replay=captured,
            )
            for _ in range(4)
        ]
        return session["id"], [outcome for outcome, _ in replays]

    session_id, outcomes = asyncio.run(scenario())
    assert outcomes == ["auth_failed"] * 4
    rows = controller.json("audit", "log", "--type", "agent.auth_failed")
    assert rows[0]["source"] == "127.0.0.5"
    assert rows[0]["session"] == session_id
    assert rows[0]["details"]["message"] == "resume"
    wait_until(
        lambda: _events_total(controller.json("audit", "log", "--type", "agent.auth_failed")) == 4,
        20,
        "the replays to be counted",
    )


def test_a_join_signed_for_another_certificate_is_audited(controller: Controller) -> None:
    key = Ed25519PrivateKey.generate()
    other = "ab" * 32
    assert _pin(controller) != other
    # what a relay in the middle passes on: a join signed for the certificate it showed
    outcome, _ = asyncio.run(_raw_agent(controller, other, key, code="ABCDE-FGHJK"))
    assert outcome == "auth_failed"
    [row] = controller.json("audit", "log", "--type", "agent.auth_failed")
    assert row["details"] == {"message": "join", "reason": "agent signature does not verify"}
    assert row["agent"] == signing.agent_id(signing.public_key_text(key))


def test_a_join_with_a_key_that_is_not_base64_is_refused_not_crashed(
    controller: Controller,
) -> None:
    """Found by bench/fuzz.py: naming the agent of a failed join raised on a key that is
    not even base64, and the handler ended the connection with 1011."""
    key = Ed25519PrivateKey.generate()
    _, made = asyncio.run(_raw_agent(controller, "ab" * 32, key, code="ABCDE-FGHJK"))
    frame = json.loads(made)
    frame["public_key"] = "\u00e9" * 44
    outcome, _ = asyncio.run(
        _raw_agent(controller, "ab" * 32, key, code="ABCDE-FGHJK", replay=json.dumps(frame))
    )
    assert outcome == "auth_failed"
    assert "Traceback" not in controller.log()
    assert "connection handler failed" not in controller.log()


def test_a_second_serve_on_the_same_home_is_refused(controller: Controller) -> None:
    assert controller.process is not None
    second = subprocess.run(
        [
            sys.executable,
            "-m",
            "controller",
            "serve",
            "--home",
            str(controller.home),
            "--listen",
            f"127.0.0.1:{free_port()}",
        ],
        env=controller.env,
        capture_output=True,
        text=True,
        timeout=scaled(30),
    )
    assert second.returncode == 8, second.stderr
    assert f"another `helpline serve` (pid {controller.process.pid})" in second.stderr
    # the first one still serves, and still holds the home
    assert controller.json("user", "list")
    assert (controller.home / "serve.lock").read_text().strip() == str(controller.process.pid)


def _serve_with_files(controller: Controller, soft: int, hard: int) -> subprocess.Popen[str]:
    """Restart the controller with an open-files limit, as a small machine would have."""
    controller.stop()

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))

    log = open(controller.tmp / "limited.log", "w")  # noqa: SIM115 - lives with the process
    process = subprocess.Popen(
        [sys.executable, "-m", "controller", "serve", "--home", str(controller.home)],
        env=controller.env,
        stdout=log,
        stderr=subprocess.STDOUT,
        text=True,
        preexec_fn=limit,
    )
    controller.process = process  # stopped by the fixture
    wait_until(lambda: "listening on" in _limited_log(controller), 30, "the controller to listen")
    return process


def _limited_log(controller: Controller) -> str:
    return (controller.tmp / "limited.log").read_text()


def test_the_open_files_limit_is_raised_and_reported(controller: Controller) -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard <= 256:
        pytest.skip(f"the hard open-files limit here is {hard}: nothing to raise")
    _serve_with_files(controller, 256, hard)
    assert "raised from 256" in _limited_log(controller)
    assert controller.json("user", "list")


def test_running_out_of_files_is_logged_once_per_interval(controller: Controller) -> None:
    _serve_with_files(controller, 64, 64)
    # plain TCP that never starts TLS holds a descriptor each until the handshake times out
    held = []
    try:
        for _ in range(150):
            try:
                held.append(socket.create_connection(("127.0.0.1", controller.port), timeout=1))
            except OSError:
                break
        wait_until(lambda: "Too many open files" in _limited_log(controller), 30, "accept to fail")
        # a flood of failing accepts, seconds long: asyncio alone logs one per attempt
        time.sleep(scaled(3))
    finally:
        for sock in held:
            sock.close()
    log = _limited_log(controller)
    assert log.count("out of system resource") == 1, log[-2000:]
    assert "Traceback" not in log
    # and the controller serves again once the flood is gone
    wait_until(lambda: controller.cli("user", "list", check=False).returncode == 0, 60, "service")
