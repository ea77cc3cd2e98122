"""Hostile frames at one real controller, on both endpoints, before and after a real login.

Hypothesis picks an endpoint and phase (lane), a valid message of protocol/messages.py for
it and one mutation (tests/hostile.py); the frame goes to a ``helpline serve`` process over
TLS 1.3 on loopback. Each frame must be answered or the connection closed within a bound,
never with an ``internal`` error, SQL or a 1011. Afterwards a real agent joins, the real
CLI reaches it, and the controller's log holds no traceback.

The fuzz connections come from 127.0.0.2 and 127.0.0.3, so the failed-code limit they run
into is not the real agent's (on 127.0.0.1).
"""

from __future__ import annotations

import asyncio
import json
import random
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from controller.api import METHODS
from controller.home import ControllerHome
from tests import hostile
from tests.conftest import scaled
from tests.e2e.conftest import Controller

pytestmark = pytest.mark.e2e

#: no answer and no close within this long is a hung connection
HANG_SECONDS = 10.0
FUZZ_SOURCE = ("127.0.0.2", 0)
LOGIN_SOURCE = ("127.0.0.3", 0)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=12,
)
hostile_values = st.one_of(
    st.sampled_from(hostile.SPECIAL_VALUES),
    st.integers(min_value=2**63),
    st.integers(max_value=-(2**63)),
    st.text(st.characters(codec="utf-8", categories=["Cc", "Cf", "Zl", "Zp", "Lo"])),
    json_values,
)


@dataclass
class Target:
    """The controller under fuzz, a technician key, and a forged agent with a session."""

    controller: Controller
    key: str
    pin: str
    ticket: str
    agent: hostile.ForgedAgent
    templates: hostile.Templates

    async def technician(self) -> Any:
        return await hostile.technician_login(
            self.controller.url, self.key, self.pin, local_addr=LOGIN_SOURCE
        )

    async def live_agent(self) -> Any:
        """Resume the forged agent's session; join anew when a fuzz frame ended it."""
        try:
            return await self.agent.login(self.controller.url, local_addr=LOGIN_SOURCE)
        except hostile.PeerRefused as exc:
            if exc.code not in ("session_ended", "grant_expired"):
                raise
        try:
            code = await self.call("code.issue", {"ticket": self.ticket})
        except hostile.PeerRefused:
            # a fuzzed call may have resolved or closed the ticket: that is allowed
            opened = await self.call("ticket.open", {"title": "Fuzzed", "customer": "ACME"})
            self.ticket = opened["id"]
            code = await self.call("code.issue", {"ticket": self.ticket})
        return await self.agent.login(self.controller.url, code["code"], local_addr=LOGIN_SOURCE)

    async def call(self, method: str, params: dict[str, Any]) -> Any:
        ws = await self.technician()
        try:
            call, call_id = hostile.probe("api-post")
            data = {**json.loads(call), "method": method, "params": params}
            await ws.send(json.dumps(data))
            while True:
                reply = json.loads(await asyncio.wait_for(ws.recv(), scaled(HANG_SECONDS)))
                if reply.get("reply_to") == call_id:
                    if not reply["ok"]:
                        raise hostile.PeerRefused(str(reply.get("error_code")))
                    return reply["result"]
        finally:
            await ws.close()


async def _exchange(
    target: Target, lane: str, build: Any
) -> tuple[list[str | bytes], list[Any], Any]:
    """Log in as ``lane`` needs, send the frames ``build()`` makes, then a probe where one
    applies; every frame received until every answer came, or the close."""
    if lane == "api-post":
        ws = await target.technician()
    elif lane == "agent-post":
        ws = await target.live_agent()
        target.templates.session_id = target.agent.session_id or ""
    else:
        path = "/agent" if lane == "agent-pre" else "/api"
        ws = await connect(
            target.controller.url + path,
            ssl=hostile.insecure_context(),
            max_size=None,
            local_addr=FUZZ_SOURCE,
        )
        hello = json.loads(await asyncio.wait_for(ws.recv(), scaled(HANG_SECONDS)))
        target.templates.agent_signature = target.agent.sign(hello["challenge"])
    frames: list[str | bytes] = build()
    received: list[Any] = []
    try:
        probe, wanted = hostile.probe(lane)
        # wait for the probe, and for each call's own reply: calls run concurrently, so
        # the probe alone does not say that the fuzzed ones have finished
        waiting = {wanted, *(_call_id(frame) for frame in frames)} - {""}
        for frame in frames:
            await ws.send(frame)
        if lane.endswith("post"):
            await ws.send(probe)
        async with asyncio.timeout(scaled(HANG_SECONDS)):
            while waiting:
                raw = await ws.recv()
                received.append(json.loads(raw))
                if not lane.endswith("post"):
                    break
                waiting = {one for one in waiting if not hostile.answered(raw, one)}
    except TimeoutError:
        shown = " | ".join(hostile.describe(frame) for frame in frames)
        raise AssertionError(
            f"{lane}: neither an answer nor a close within {HANG_SECONDS} s after {shown}"
        ) from None
    except ConnectionClosed:
        pass
    finally:
        await ws.close()
    return frames, received, ws.close_code


def _call_id(frame: str | bytes) -> str:
    """The id of a frame that is a well-formed call, else ''."""
    try:
        data = json.loads(frame)
    except (ValueError, RecursionError):
        return ""
    if isinstance(data, dict) and data.get("type") == "call" and isinstance(data.get("id"), str):
        return data["id"]
    return ""


@pytest.fixture
def target(controller: Controller, tmp_path: Path) -> Target:
    key = tmp_path / "tech"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    controller.cli("user", "add", "fuzz", "--key", f"{key}.pub", "--level", "L2")
    pin = ControllerHome(controller.home).pin()
    agent = hostile.ForgedAgent(pin)
    methods = (*sorted(METHODS), "no.such.method", "")
    templates = hostile.Templates(methods=methods, agent_public_key=agent.public_key)
    target = Target(controller, str(key), pin, "", agent, templates)

    async def join() -> None:
        # the technician's own calls: opening a ticket and issuing its code
        opened = await target.call("ticket.open", {"title": "Fuzzed", "customer": "ACME"})
        target.ticket = opened["id"]
        code = await target.call("code.issue", {"ticket": target.ticket})
        ws = await agent.login(controller.url, code["code"], local_addr=LOGIN_SOURCE)
        await ws.close()

    asyncio.run(join())
    return target


def test_hostile_frames_on_both_endpoints(target: Target) -> None:
    runner = asyncio.Runner()

    @settings(
        max_examples=200,
        deadline=None,
        derandomize=True,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        database=None,
    )
    @given(
        lane=st.sampled_from(hostile.LANES),
        frames=st.lists(
            st.tuples(
                st.sampled_from(hostile.MUTATIONS),
                hostile_values,
                st.sampled_from(target.templates.methods),
                st.sampled_from(hostile.PARAM_NAMES),
            ),
            min_size=1,
            max_size=3,
        ),
        rng=st.randoms(use_true_random=False),
    )
    def one_frame(lane: str, frames: list[tuple[str, Any, str, str]], rng: random.Random) -> None:
        def build() -> list[str | bytes]:
            built: list[str | bytes] = []
            for mutation, value, method, param in frames:
                data = target.templates.build(lane, rng)
                if data["type"] == "call":
                    # drawn here rather than by rng, so that hypothesis can search them
                    data.update(method=method, params={param: value})
                built.append(hostile.mutate(data, mutation, value, rng, target.templates))
            return built

        sent, received, close_code = runner.run(_exchange(target, lane, build))
        shown = " | ".join(hostile.describe(frame) for frame in sent)
        assert target.controller.process is not None
        assert target.controller.process.poll() is None, f"the controller died on {shown}"
        # 1011: the handler raised (1006 is no verdict: an oversized frame may be cut off
        # by the controller's refusal before its close frame is read)
        assert close_code != 1011, f"{lane}: closed {close_code} on {shown}"
        for message in received:
            text = f"{message.get('error') or ''} {message.get('message') or ''}"
            assert message.get("error_code") != "internal", f"{text} ← {shown}"
            assert not any(word in text for word in hostile.SQL_WORDS), f"{text} ← {shown}"

    try:
        one_frame()
    finally:
        runner.close()
    # the controller still serves: a real agent joins, the real CLI reaches it
    controller = target.controller
    ticket = controller.open_ticket("After the fuzz")
    controller.start_agent(controller.issue_code(ticket), name="after-fuzz")
    controller.connected_session(ticket)
    assert "pong" in controller.cli("ping", ticket).stdout
    # checked once at the end: asyncio logs a task's lost exception when the task is
    # collected, which is not tied to the frame that caused it
    log = controller.log()
    for failure in hostile.LOG_FAILURES:
        at = log.find(failure)
        assert at < 0, f"the controller logged {failure!r}:\n{log[max(0, at - 2000) : at + 3000]}"
