"""Idle agents held by one controller, and how fast they all come back after a drop.

Starts a real controller (``python -m controller init`` + ``serve``) on a free 127.0.0.1
port, then drives many real agent conversations against it from ``--clients`` separate
client processes (this same file with ``--worker``). Each client process opens its share
of websocket connections with websockets' asyncio client and drives the real sans-I/O
agent machine (:class:`protocol.session.AgentSession`) for each one, the way
``agent/connection.py`` does: pinned TLS 1.3 (the pin is checked), the controller's
``hello`` challenge signed with a real Ed25519 key per agent, ``join`` with a fresh
session code, consent yes, ``session_started``; afterwards the connection sits idle with
the agent's heartbeat (websockets pings every 20 s, both ways). Client processes set
``asyncio.sslproto.SSLProtocol.max_size`` to 16 KiB, as the agent does. Each agent dials
from its own loopback address (127.x.y.z), like agents on separate machines; the
controller's failed-code limiter counts attempts per source address.

Session codes come from ``code.issue`` calls over ``--api`` authenticated API connections
(controller/client.py) in parallel, on tickets opened with ``ticket.open``, ``--per-ticket``
agents to a ticket (the controller allows several sessions per ticket).

1. **Memory**: the controller's RSS (``/proc/PID/status`` VmRSS; also USS) with no agent,
   then after each tier of ``--tiers`` agents has joined and the controller has gone
   quiet; KiB per agent over the empty controller, and between tiers. The controller's
   CPU over ``--idle-window`` seconds of idleness at each tier, and its CPU per join and
   per issued code.
2. **Reconnects**: with the largest tier joined, every client drops all its connections
   at once (the sockets are aborted, as when a network path fails); when the controller
   shows no agent connected (``sessions.list``), all of them ``resume`` with their saved
   session id and a fresh signature, ``--resume-window`` attempts in flight per client
   process, as fast as the clients can. Rate = agents back / (last ``session_started``
   minus first connect), across all client processes (CLOCK_MONOTONIC is shared).
3. **Floor**: before the controller starts, the same client processes open as many bare
   TLS 1.3 + websocket connections against a websockets server in its own process with
   the controller's certificate, TLS context and settings and no protocol of ours: the
   handshakes per second and the server's RSS per held connection.

Everything is bounded (per-connection timeouts, ``--phase-timeout`` per phase,
``--timeout`` overall); client processes, servers and the temporary directory are removed
however the run ends. This benchmark runs no git command (the tree is not recorded).
``--profile`` adds ``py-spy record`` of the controller while it idles with the top tier,
and a second drop + resume pass under py-spy.

The full run takes about 9 minutes on a 2-core machine, most of it in the 10,000 joins
(the controller takes about 40 a second; each is several durable SQLite transactions and
audit events); ``--quick`` (100 and 300 agents) takes under a minute.

    python bench/idle_agents.py [--tiers 1000,5000,10000] [--clients 2] [--quick] [--profile]
"""

from __future__ import annotations

import argparse
import asyncio
import asyncio.sslproto
import json
import math
import os
import random
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar
from unittest import mock

import _harness as h
import psutil

KIB = 1024
MIB = 1 << 20
TARGET_AGENTS = 10_000
TARGET_KIB_PER_AGENT = 50.0  # "≤ 50 KB each", read as 50 KiB (50 kB would be 48.8 KiB)
TARGET_ACCEPTS_PER_S = 600.0
TARGET_RECONNECT_S = 30.0
HEARTBEAT_SECONDS = 20.0  # agent/connection.py and controller/server.py default
TLS_READ_BUFFER = 16 * 1024
SCRIPT = str(Path(__file__).resolve())

T = TypeVar("T")


# == client worker process ==================================================================


@dataclass
class SimAgent:
    """One simulated agent: its key, its address, its session and connection."""

    index: int
    address: str
    key: Any  # Ed25519PrivateKey
    public_key: str
    session_id: str | None = None
    ws: Any = None
    reader: asyncio.Task[None] | None = None
    dropping: bool = False
    lost: bool = False  # closed by the other side while we meant to keep it


def loopback_address(index: int) -> str:
    """A distinct 127.a.b.c source address per agent (all of 127/8 is loopback on Linux)."""
    return f"127.{1 + index // 62_500}.{1 + index // 250 % 250}.{1 + index % 250}"


class Worker:
    """Holds a share of the simulated agents; obeys JSON commands on stdin."""

    def __init__(self) -> None:
        self.url = ""
        self.pin = ""
        self.heartbeat = HEARTBEAT_SECONDS
        self.agents: dict[int, SimAgent] = {}
        self.floor: list[Any] = []
        self.context: Any = None

    # -- one agent conversation -----------------------------------------------------

    async def _dial(self, url: str, address: str) -> Any:
        from websockets.asyncio.client import connect

        from protocol import codec

        return await connect(
            url,
            ssl=self.context,
            max_size=codec.AGENT_MAX_FRAME,
            open_timeout=30,
            ping_interval=self.heartbeat,
            ping_timeout=self.heartbeat,
            close_timeout=2,
            compression=None,
            local_addr=(address, 0),
        )

    async def converse(self, agent: SimAgent, code: str | None) -> None:
        """Dial, check the pin, join (``code``) or resume, and stay connected when live."""
        from agent import __version__
        from protocol import codec, signing
        from protocol.machine import Ended, Refused
        from protocol.messages import AgentInfo
        from protocol.session import AgentSession, ConsentNeeded, SessionLive
        from transport.tls import check_pin

        ws = await self._dial(self.url + "/agent", agent.address)
        try:
            check_pin(ws.transport.get_extra_info("ssl_object"), self.pin)
            machine = AgentSession(
                public_key=agent.public_key,
                sign=lambda challenge: signing.sign_agent(agent.key, challenge, self.pin),
                agent=AgentInfo(
                    hostname=f"bench-{agent.index:05d}",
                    platform="Linux-bench",
                    agent_version=__version__,
                ),
                code=code,
                session_id=None if code is not None else agent.session_id,
            )
            live = False
            while not live:
                events = machine.receive(codec.decode(await ws.recv()))
                for event in events:
                    if isinstance(event, ConsentNeeded):
                        machine.answer_consent(True)
                    elif isinstance(event, SessionLive):
                        agent.session_id = event.started.session_id
                        live = True
                    elif isinstance(event, Refused):
                        raise Refusal(event.code)
                    elif isinstance(event, Ended):
                        raise Refusal("ended")
                for message in machine.data_to_send():
                    await ws.send(codec.encode(message))
        except BaseException:
            ws.transport.abort()
            raise
        agent.ws, agent.dropping, agent.lost = ws, False, False
        agent.reader = asyncio.create_task(self._hold(agent, ws, machine))

    async def _hold(self, agent: SimAgent, ws: Any, machine: Any) -> None:
        """Stay connected like an idle agent: answer pings, notice a close."""
        from websockets.exceptions import ConnectionClosed

        from protocol import codec
        from protocol.errors import ProtocolError
        from protocol.messages import Ping, Result
        from protocol.session import RequestReceived

        try:
            async for frame in ws:
                for event in machine.receive(codec.decode(frame)):
                    if isinstance(event, RequestReceived) and isinstance(event.request, Ping):
                        now = datetime.now(UTC)
                        machine.reply(Result(reply_to=event.request.id, ok=True, produced_at=now))
                for message in machine.data_to_send():
                    await ws.send(codec.encode(message))
        except (ConnectionClosed, ProtocolError, OSError):
            pass
        if not agent.dropping:
            agent.lost = True

    # -- commands -------------------------------------------------------------------

    async def cmd_config(self, msg: dict[str, Any]) -> dict[str, Any]:
        # import now what the conversations need, so that no timed phase pays for it
        import websockets.asyncio.client  # noqa: F401
        from cryptography.hazmat.primitives.asymmetric import ed25519  # noqa: F401

        import protocol.session  # noqa: F401
        from transport.tls import pinned_client_context

        # asyncio gives each TLS connection a 256 KiB read buffer unless told otherwise
        asyncio.sslproto.SSLProtocol.max_size = TLS_READ_BUFFER
        self.url, self.pin = msg["url"], msg["pin"]
        self.heartbeat = float(msg["heartbeat"])
        self.context = pinned_client_context()
        return {}

    async def cmd_join(self, msg: dict[str, Any]) -> dict[str, Any]:
        """Join each ``[index, code]`` with at most ``window`` conversations in flight."""
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

        from protocol import signing

        pairs: list[list[Any]] = msg["agents"]
        for index, _code in pairs:
            key = Ed25519PrivateKey.generate()
            self.agents[index] = SimAgent(
                index, loopback_address(index), key, signing.public_key_text(key)
            )
        gate = asyncio.Semaphore(int(msg["window"]))
        failures: Counter[str] = Counter()
        started = time.monotonic()

        async def one(index: int, code: str) -> None:
            async with gate:
                try:
                    async with asyncio.timeout(float(msg["timeout"])):
                        await self.converse(self.agents[index], code)
                except Exception as exc:
                    failures[failure_name(exc)] += 1

        await asyncio.gather(*(one(index, code) for index, code in pairs))
        return {
            "joined": len(pairs) - sum(failures.values()),
            "failures": dict(failures),
            "t0": started,
            "t1": time.monotonic(),
        }

    async def cmd_status(self, msg: dict[str, Any]) -> dict[str, Any]:
        live = sum(1 for a in self.agents.values() if a.ws is not None and not a.lost)
        lost = sum(1 for a in self.agents.values() if a.lost)
        me = psutil.Process()
        return {
            "live": live,
            "lost": lost,
            "rss": me.memory_info().rss,
            "fds": me.num_fds(),
            "cpu": sum(me.cpu_times()[:2]),
        }

    async def cmd_drop(self, msg: dict[str, Any]) -> dict[str, Any]:
        """Abort every connection at once (no close frame), as a failed network path would."""
        readers = []
        for agent in self.agents.values():
            if agent.ws is not None:
                agent.dropping = True
                agent.ws.transport.abort()
                if agent.reader is not None:
                    readers.append(agent.reader)
                agent.ws = None
        for reader in readers:
            reader.cancel()
        await asyncio.gather(*readers, return_exceptions=True)
        return {"dropped": len(readers)}

    async def cmd_resume(self, msg: dict[str, Any]) -> dict[str, Any]:
        """Every agent with a session resumes it; failed attempts retry with full jitter."""
        agents = [a for a in self.agents.values() if a.session_id is not None and a.ws is None]
        gate = asyncio.Semaphore(int(msg["window"]))
        deadline = float(msg["deadline"])
        failures: Counter[str] = Counter()
        retries: Counter[str] = Counter()
        firsts: list[float] = []
        lasts: list[float] = []
        latencies: list[float] = []  # first attempt → session_started, per agent
        await asyncio.sleep(max(0.0, float(msg["start_at"]) - time.monotonic()))

        async def one(agent: SimAgent) -> None:
            attempt = 0
            first: float | None = None
            while True:
                async with gate:
                    now = time.monotonic()
                    first = now if first is None else first
                    try:
                        async with asyncio.timeout(max(0.1, deadline - now)):
                            await self.converse(agent, None)
                    except Refusal as exc:
                        failures[str(exc)] += 1
                        return
                    except Exception as exc:
                        if time.monotonic() >= deadline:
                            failures[failure_name(exc)] += 1
                            return
                        retries[failure_name(exc)] += 1
                    else:
                        done = time.monotonic()
                        firsts.append(first)
                        lasts.append(done)
                        latencies.append(done - first)
                        return
                # back off outside the gate, like the agent (full jitter, base 0.5 s)
                attempt += 1
                await asyncio.sleep(random.uniform(0, min(30.0, 0.5 * 2 ** (attempt - 1))))

        await asyncio.gather(*(one(agent) for agent in agents))
        return {
            "resumed": len(lasts),
            "wanted": len(agents),
            "failures": dict(failures),
            "retries": dict(retries),
            "t0": min(firsts, default=0.0),
            "t1": max(lasts, default=0.0),
            "latencies": latencies,
        }

    async def cmd_floor(self, msg: dict[str, Any]) -> dict[str, Any]:
        """Open ``count`` bare TLS + websocket connections; keep them open."""
        gate = asyncio.Semaphore(int(msg["window"]))
        failures: Counter[str] = Counter()
        lasts: list[float] = []
        first = int(msg["first_index"])
        step = int(msg["step"])
        await asyncio.sleep(max(0.0, float(msg["start_at"]) - time.monotonic()))
        started = time.monotonic()

        async def one(index: int) -> None:
            async with gate:
                try:
                    async with asyncio.timeout(float(msg["timeout"])):
                        ws = await self._dial(msg["url"], loopback_address(index))
                        self.floor.append(ws)
                        lasts.append(time.monotonic())
                except Exception as exc:
                    failures[failure_name(exc)] += 1

        count = int(msg["count"])
        await asyncio.gather(*(one(first + i * step) for i in range(count)))
        return {
            "opened": len(lasts),
            "failures": dict(failures),
            "t0": started,
            "t1": max(lasts, default=started),
        }

    async def cmd_floor_close(self, msg: dict[str, Any]) -> dict[str, Any]:
        closed = len(self.floor)
        for ws in self.floor:
            ws.transport.abort()
        self.floor.clear()
        return {"closed": closed}

    async def cmd_quit(self, msg: dict[str, Any]) -> dict[str, Any]:
        for agent in self.agents.values():
            if agent.ws is not None:
                agent.dropping = True
                agent.ws.transport.abort()
        return {}

    async def serve(self) -> None:
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(limit=64 * MIB)
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        while True:
            line = await reader.readline()
            if not line:
                return
            msg = json.loads(line)
            handler = getattr(self, "cmd_" + msg["cmd"])
            try:
                reply = {"ok": True, **(await handler(msg))}
            except Exception as exc:
                reply = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
            sys.stdout.write(json.dumps(reply) + "\n")
            sys.stdout.flush()
            if msg["cmd"] == "quit":
                return


class Refusal(Exception):
    """The controller refused the conversation (an ``error`` frame): not worth a retry."""


def failure_name(exc: BaseException) -> str:
    text = str(exc).split("\n", 1)[0][:60]
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def worker_main() -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the orchestrator stops us
    asyncio.run(Worker().serve())
    return 0


# == floor server process ====================================================================


async def floor_serve(home: Path, port: int, heartbeat: float, lifetime: float) -> None:
    """Bare websockets over the controller's TLS identity and settings; no protocol."""
    from websockets.asyncio.server import ServerConnection, serve

    from controller.home import ControllerHome
    from controller.tls import server_context
    from protocol import codec
    from transport.tls import lean_tls_buffers

    lean_tls_buffers()
    controller_home = ControllerHome(home)

    async def hold(ws: ServerConnection) -> None:
        await ws.wait_closed()

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with serve(
        hold,
        "127.0.0.1",
        port,
        ssl=server_context(controller_home.cert_path, controller_home.key_path),
        max_size=codec.API_MAX_FRAME,
        ping_interval=heartbeat,
        ping_timeout=heartbeat,
        server_header="helpline",
        compression=None,
    ):
        with suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), lifetime)


# == orchestrator ============================================================================


class Client:
    """One client worker process, spoken to in JSON lines."""

    def __init__(self, process: asyncio.subprocess.Process, log: Path) -> None:
        self.process = process
        self.log = log

    async def ask(self, cmd: str, seconds: float, **fields: Any) -> dict[str, Any]:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write((json.dumps({"cmd": cmd, **fields}) + "\n").encode())
        await self.process.stdin.drain()
        try:
            async with asyncio.timeout(seconds):
                line = await self.process.stdout.readline()
        except TimeoutError:
            raise h.BenchError(
                f"client {self.process.pid}: no answer to {cmd} in {seconds:g} s"
            ) from None
        if not line:
            tail = self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""
            raise h.BenchError(f"client {self.process.pid} exited during {cmd}:\n{tail}")
        reply: dict[str, Any] = json.loads(line)
        if not reply.get("ok"):
            raise h.BenchError(f"client {self.process.pid}: {cmd} failed: {reply.get('error')}")
        return reply


async def ask_all(
    clients: Sequence[Client], cmd: str, seconds: float, per_client: Sequence[dict[str, Any]]
) -> list[dict[str, Any]]:
    return list(
        await asyncio.gather(
            *(c.ask(cmd, seconds, **fields) for c, fields in zip(clients, per_client, strict=True))
        )
    )


@dataclass
class Memory:
    rss: int
    uss: int
    hwm: int
    fds: int
    threads: int

    @classmethod
    def read(cls, pid: int) -> Memory:
        process = psutil.Process(pid)
        status = Path(f"/proc/{pid}/status").read_text()
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        return cls(
            rss=int(fields["VmRSS"].split()[0]) * KIB,
            uss=int(process.memory_full_info().uss),
            hwm=int(fields["VmHWM"].split()[0]) * KIB,
            fds=process.num_fds(),
            threads=process.num_threads(),
        )


@dataclass
class Tier:
    agents: int
    memory: Memory
    join_seconds: float
    joined: int
    failures: dict[str, int]
    codes_per_s: float
    code_cpu_ms: float
    join_cpu_ms: float
    idle_cpu_percent: float


@dataclass
class Storm:
    label: str
    wanted: int
    resumed: int
    seconds: float
    failures: dict[str, int]
    retries: dict[str, int]
    latencies: list[float]
    drop_seconds: float
    controller_cpu_s: float
    clients_cpu_s: float

    @property
    def rate(self) -> float:
        return self.resumed / self.seconds if self.seconds > 0 else 0.0

    @property
    def cpu_ms_each(self) -> float:
        return self.controller_cpu_s / max(1, self.resumed) * 1e3

    def latency_ms(self, q: float) -> float:
        ordered = sorted(self.latencies)
        return h.percentile(ordered, q) * 1e3 if ordered else float("nan")


@dataclass
class Floor:
    wanted: int
    opened: int
    seconds: float
    failures: dict[str, int]
    server_cpu_s: float
    rss_empty: int
    rss_held: int

    @property
    def rate(self) -> float:
        return self.opened / self.seconds if self.seconds > 0 else 0.0

    @property
    def cpu_ms_each(self) -> float:
        return self.server_cpu_s / max(1, self.opened) * 1e3

    @property
    def kib_each(self) -> float:
        return (self.rss_held - self.rss_empty) / max(1, self.opened) / KIB


@dataclass
class Outcome:
    baseline: Memory | None = None
    tiers: list[Tier] = field(default_factory=list)
    storm: Storm | None = None
    after_storm: Memory | None = None
    floor: Floor | None = None
    profiled: Storm | None = None
    profiles: dict[str, Any] = field(default_factory=dict)  # what -> roundtrip.Profile
    tickets_per_s: float = 0.0
    others_percent: float = 0.0  # of one core, by processes not ours, over the run
    log_lines: int = 0
    sources: str = ""
    log_connection_lines: int = 0
    log_problems: list[str] = field(default_factory=list)
    tracebacks: list[list[str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def machine_busy_seconds() -> float:
    """CPU time all processes of the machine have used since boot (/proc/stat)."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(f) for f in fields[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def own_busy_seconds() -> float:
    """CPU time of this process, its waited-for children and its live descendants."""
    mine = os.times()
    total = mine.user + mine.system + mine.children_user + mine.children_system
    for child in psutil.Process().children(recursive=True):
        with suppress(psutil.Error):
            total += sum(child.cpu_times()[:2])
    return total


def cpu_seconds(pid: int) -> float:
    times = psutil.Process(pid).cpu_times()
    return float(times.user + times.system)


async def settle(pid: int, quiet_share: float = 0.3, seconds: float = 60.0) -> None:
    """Wait until the controller uses less than ``quiet_share`` of a core over 1 s."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        before = cpu_seconds(pid)
        await asyncio.sleep(1.0)
        if cpu_seconds(pid) - before < quiet_share:
            return
    raise h.BenchError(f"the controller stayed busy for {seconds:g} s")


async def start_clients(tmp: Path, count: int) -> list[Client]:
    clients = []
    for n in range(count):
        log = tmp / f"client-{n}.log"
        with log.open("ab") as stderr:
            process = await asyncio.create_subprocess_exec(
                *(sys.executable, SCRIPT, "--worker"),
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=stderr,
                cwd=h.REPO,
                limit=64 * MIB,
            )
        clients.append(Client(process, log))
    return clients


async def stop_clients(clients: Sequence[Client]) -> None:
    """Ask each client to quit; SIGTERM, then SIGKILL, only these processes, by id."""
    for client in clients:
        if client.process.returncode is None:
            with suppress(Exception):
                await client.ask("quit", 20)
    for client in clients:
        if client.process.returncode is None:
            with suppress(ProcessLookupError):
                client.process.terminate()
        try:
            await asyncio.wait_for(client.process.wait(), 10)
        except TimeoutError:
            with suppress(ProcessLookupError):
                client.process.kill()
            await client.process.wait()


class ApiPool:
    """``size`` authenticated API connections (controller/client.py) used side by side."""

    def __init__(self, home: Path, size: int) -> None:
        self.home = home
        self.size = size
        self.connections: list[Any] = []

    async def __aenter__(self) -> ApiPool:
        from controller.client import Connection, load_client_settings

        settings = load_client_settings(self.home)
        try:
            for _ in range(self.size):
                connection = Connection(settings)
                await connection.__aenter__()
                self.connections.append(connection)
        except BaseException:
            await self.__aexit__()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        for connection in self.connections:
            with suppress(Exception):
                await connection.__aexit__(None, None, None)

    async def map(self, method: str, params: Sequence[dict[str, Any]]) -> list[Any]:
        """Call ``method`` once per ``params``: each connection takes every size-th call."""
        results: list[Any] = [None] * len(params)

        async def lane(lane_no: int) -> None:
            connection = self.connections[lane_no]
            for i in range(lane_no, len(params), self.size):
                results[i] = await connection.call(method, params[i])

        await asyncio.gather(*(lane(n) for n in range(self.size)))
        return results

    async def call(self, method: str, params: dict[str, Any]) -> Any:
        return await self.connections[0].call(method, params)


async def connected_count(api: ApiPool) -> int:
    """Live sessions whose agent the controller shows connected now (``sessions.list``)."""
    sessions = await api.call("sessions.list", {})
    return sum(1 for s in sessions if s.get("connected"))


async def sessions_probe(api: ApiPool) -> tuple[int, int, float]:
    """(agents connected, bytes of the ``sessions.list`` reply, seconds the call took)."""
    started = time.monotonic()
    sessions = await api.call("sessions.list", {})
    seconds = time.monotonic() - started
    connected = sum(1 for s in sessions if s.get("connected"))
    return connected, len(json.dumps({"result": sessions})), seconds


async def wait_connected(api: ApiPool, want: int, seconds: float, what: str) -> float:
    started = time.monotonic()
    seen = -1
    while time.monotonic() < started + seconds:
        seen = await connected_count(api)
        if seen == want:
            return time.monotonic() - started
        await asyncio.sleep(0.5)
    raise h.BenchError(f"timed out after {seconds:g} s waiting for {what} (saw {seen})")


# -- floor --------------------------------------------------------------------------------


def start_floor_server(stack: h.Stack, port: int, lifetime: float) -> subprocess.Popen[bytes]:
    with (stack.tmp / "floor.log").open("ab") as log:
        server = subprocess.Popen(
            [
                *(sys.executable, SCRIPT, "--floor-serve", "--home", str(stack.home)),
                *("--port", str(port), "--lifetime", str(lifetime)),
            ],
            cwd=h.REPO,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=log,
        )

    def listening() -> bool:
        if server.poll() is not None:
            raise h.BenchError(f"floor server exited {server.returncode}")
        return h.port_open(port)

    try:
        h.wait_until(listening, 30, "the floor server")
    except BaseException:
        h.stop_process(server)
        raise
    return server


async def run_floor(args: argparse.Namespace, stack: h.Stack, clients: list[Client]) -> Floor:
    """The clients open as many bare TLS + websocket connections as the top tier has agents."""
    port = h.free_port()
    server = start_floor_server(stack, port, args.timeout)
    n = len(clients)
    count = max(args.tiers)
    try:
        await asyncio.sleep(1.0)
        empty = Memory.read(server.pid)
        before = cpu_seconds(server.pid)
        start_at = time.monotonic() + 0.5
        replies = await ask_all(
            clients,
            "floor",
            args.phase_timeout,
            [
                {
                    "url": f"wss://127.0.0.1:{port}/agent",
                    "window": args.resume_window,
                    "count": len(range(i, count, n)),
                    "first_index": i,
                    "step": n,
                    "start_at": start_at,
                    "timeout": 60,
                }
                for i in range(n)
            ],
        )
        server_cpu = cpu_seconds(server.pid) - before
        await asyncio.sleep(args.settle)
        held = Memory.read(server.pid)
        await ask_all(clients, "floor_close", 60, [{}] * n)
    finally:
        h.stop_process(server)
    failures: Counter[str] = Counter()
    for reply in replies:
        failures.update(reply["failures"])
    floor = Floor(
        wanted=count,
        opened=sum(r["opened"] for r in replies),
        seconds=max(r["t1"] for r in replies) - min(r["t0"] for r in replies),
        failures=dict(failures),
        server_cpu_s=server_cpu,
        rss_empty=empty.rss,
        rss_held=held.rss,
    )
    print(
        f"floor: {floor.opened}/{floor.wanted} bare TLS+websocket handshakes in "
        f"{floor.seconds:.2f} s = {floor.rate:,.0f}/s (server CPU {floor.cpu_ms_each:.2f} ms "
        f"each); server RSS {floor.rss_empty / MIB:.1f} -> {floor.rss_held / MIB:.1f} MiB "
        f"({floor.kib_each:.1f} KiB each); failures {floor.failures}"
    )
    return floor


# -- the controller -----------------------------------------------------------------------


async def join_tier(
    args: argparse.Namespace,
    pid: int,
    api: ApiPool,
    clients: list[Client],
    tickets: list[str],
    joined: int,
    target: int,
    outcome: Outcome,
) -> Tier:
    """Open tickets and issue codes for agents ``joined..target``, join them, measure."""
    indices = list(range(joined, target))
    needed = math.ceil(target / args.per_ticket) - len(tickets)
    if needed > 0:
        started = time.monotonic()
        opened = await api.map(
            "ticket.open",
            [
                {"title": f"idle agents {len(tickets) + i + 1}", "customer": "bench"}
                for i in range(needed)
            ],
        )
        outcome.tickets_per_s = needed / (time.monotonic() - started)
        tickets += [str(t["id"]) for t in opened]
    started = time.monotonic()
    cpu_before = cpu_seconds(pid)
    issued = await api.map(
        "code.issue",
        [{"ticket": tickets[i // args.per_ticket], "seconds": 3600} for i in indices],
    )
    codes_per_s = len(indices) / (time.monotonic() - started)
    code_cpu_ms = (cpu_seconds(pid) - cpu_before) / len(indices) * 1e3
    pairs = [[i, str(r["code"])] for i, r in zip(indices, issued, strict=True)]
    n = len(clients)
    cpu_before = cpu_seconds(pid)
    replies = await ask_all(
        clients,
        "join",
        args.phase_timeout,
        [{"agents": pairs[c::n], "window": args.join_window, "timeout": 60} for c in range(n)],
    )
    failures: Counter[str] = Counter()
    for reply in replies:
        failures.update(reply["failures"])
    join_seconds = max(r["t1"] for r in replies) - min(r["t0"] for r in replies)
    joined_now = sum(r["joined"] for r in replies)
    join_cpu_ms = (cpu_seconds(pid) - cpu_before) / max(1, joined_now) * 1e3
    print(
        f"tier {target}: {len(indices)} codes at {codes_per_s:,.0f}/s ({code_cpu_ms:.1f} ms "
        f"controller CPU each); joined {joined_now} in {join_seconds:.1f} s "
        f"({joined_now / join_seconds:,.0f}/s, {join_cpu_ms:.1f} ms controller CPU each); "
        f"failures {dict(failures)}"
    )
    await settle(pid)
    await asyncio.sleep(args.settle)
    memory = Memory.read(pid)
    before = cpu_seconds(pid)
    await asyncio.sleep(args.idle_window)
    idle = (cpu_seconds(pid) - before) / args.idle_window * 100
    status = await ask_all(clients, "status", 60, [{}] * n)
    live = sum(s["live"] for s in status)
    lost = sum(s["lost"] for s in status)
    if lost:
        outcome.notes.append(f"at {target:,} agents the controller had closed {lost} of them")
    print(
        f"  controller RSS {memory.rss / MIB:.1f} MiB (USS {memory.uss / MIB:.1f}), fds "
        f"{memory.fds}, threads {memory.threads}, idle CPU {idle:.2f} % of a core; clients "
        f"hold {live} live (RSS {sum(s['rss'] for s in status) / MIB:.0f} MiB), lost {lost}"
    )
    return Tier(
        agents=live,
        memory=memory,
        join_seconds=join_seconds,
        joined=joined_now,
        failures=dict(failures),
        codes_per_s=codes_per_s,
        code_cpu_ms=code_cpu_ms,
        join_cpu_ms=join_cpu_ms,
        idle_cpu_percent=idle,
    )


async def drop(api: ApiPool, clients: list[Client]) -> tuple[int, float]:
    """Abort every agent connection; (dropped, seconds until the controller showed none)."""
    dropped = await ask_all(clients, "drop", 120, [{}] * len(clients))
    seen = await wait_connected(api, 0, 120, "the controller to see every agent gone")
    return sum(r["dropped"] for r in dropped), seen


async def resume(
    args: argparse.Namespace, label: str, pid: int, clients: list[Client], dropped: int, seen: float
) -> Storm:
    """All dropped agents resume at once (``--resume-window`` in flight per client)."""
    n = len(clients)
    await settle(pid)
    controller_before = cpu_seconds(pid)
    clients_before = sum(cpu_seconds(c.process.pid) for c in clients)
    start_at = time.monotonic() + 0.5
    deadline = start_at + args.phase_timeout - 30
    window = {"window": args.resume_window, "start_at": start_at, "deadline": deadline}
    replies = await ask_all(clients, "resume", args.phase_timeout, [window] * n)
    controller_cpu = cpu_seconds(pid) - controller_before
    clients_cpu = sum(cpu_seconds(c.process.pid) for c in clients) - clients_before
    failures: Counter[str] = Counter()
    retries: Counter[str] = Counter()
    latencies: list[float] = []
    for reply in replies:
        failures.update(reply["failures"])
        retries.update(reply["retries"])
        latencies += reply["latencies"]
    firsts = [r["t0"] for r in replies if r["resumed"]]
    lasts = [r["t1"] for r in replies if r["resumed"]]
    storm = Storm(
        label=label,
        wanted=dropped,
        resumed=sum(r["resumed"] for r in replies),
        seconds=(max(lasts) - min(firsts)) if firsts else 0.0,
        failures=dict(failures),
        retries=dict(retries),
        latencies=latencies,
        drop_seconds=seen,
        controller_cpu_s=controller_cpu,
        clients_cpu_s=clients_cpu,
    )
    print(
        f"{storm.label}: {storm.resumed}/{storm.wanted} resumed in {storm.seconds:.2f} s = "
        f"{storm.rate:,.0f}/s; latency p50 {storm.latency_ms(0.5):.0f} ms, p99 "
        f"{storm.latency_ms(0.99):.0f} ms, max {storm.latency_ms(1.0):.0f} ms; controller CPU "
        f"{storm.controller_cpu_s:.1f} s ({storm.cpu_ms_each:.2f} ms per resume), clients CPU "
        f"{storm.clients_cpu_s:.1f} s; retries {storm.retries}; failures {storm.failures}; "
        f"drop seen by the controller within {storm.drop_seconds:.1f} s"
    )
    return storm


async def spied(
    args: argparse.Namespace, pid: int, outdir: Path, what: str, work: Awaitable[T]
) -> tuple[T, Any]:
    """Run ``work`` with ``py-spy record --nonblocking`` on the controller; (result, profile)."""
    from roundtrip import start_spies, stop_spies, summarise

    role = f"controller-{what}"
    spies = start_spies({role: pid}, outdir, args.profile_rate, args.phase_timeout, False)
    try:
        await asyncio.sleep(1.0)  # let py-spy attach
        result = await work
    finally:
        stop_spies(spies)
    return result, summarise(role, outdir / f"{role}.txt", top=12)


def read_log(path: Path, outcome: Outcome) -> None:
    """Count the controller's log lines, per-connection ones, problems and tracebacks."""
    if not path.exists():
        return
    lines = path.read_text(errors="replace").splitlines()
    outcome.log_lines = len(lines)
    outcome.log_connection_lines = sum(
        1 for line in lines if "connection open" in line or "connection closed" in line
    )
    bad = ("ERROR", "WARNING", "CRITICAL")
    found = Counter(
        line.split(" ", 2)[-1][:160]  # without the timestamp, so that repeats add up
        for line in lines
        if any(word in line for word in bad)
    )
    outcome.log_problems = [f"{count} x {line}" for line, count in found.most_common(8)]
    # each distinct traceback once (by its last line), whole: up to the next log record
    tracebacks: dict[str, list[str]] = {}
    for i, line in enumerate(lines):
        if not line.startswith("Traceback") or (i and lines[i - 1].startswith(" ")):
            continue
        block = [line]
        for following in lines[i + 1 :]:
            if re.match(r"\d{4}-\d\d-\d\d |helpline: ", following):
                break
            block.append(following)
        while block and not block[-1].strip():
            block.pop()
        tracebacks.setdefault(block[-1], block)
    outcome.tracebacks = list(tracebacks.values())


async def benchmark(args: argparse.Namespace) -> Outcome:
    outcome = Outcome(sources=newest_source())
    started, machine_before = time.monotonic(), machine_busy_seconds()
    own_before = own_busy_seconds()
    with h.temp_dir("helpline-bench-idle-") as tmp:
        env = {
            **os.environ,
            "HELPLINE_HOME": str(tmp / "controller"),
            "HELPLINE_CLIENT_CONFIG": str(tmp / "client.toml"),
        }
        env.pop("HELPLINE_DB", None)
        stack = h.Stack(tmp=tmp, port=h.free_port(), env=env)
        spydir = args.profile_dir or tmp / "spy"
        clients: list[Client] = []
        try:
            stack.cli("init", "--url", stack.url, "--home", str(stack.home))
            from controller.home import ControllerHome

            pin = ControllerHome(stack.home).pin()
            clients = await start_clients(tmp, args.clients)
            config = {"url": stack.url, "pin": pin, "heartbeat": HEARTBEAT_SECONDS}
            await ask_all(clients, "config", 60, [config] * len(clients))
            if not args.no_floor:
                outcome.floor = await run_floor(args, stack, clients)
            stack.start_controller()
            assert stack.controller is not None
            pid = stack.controller.pid
            print(f"controller pid {pid}; client pids {[c.process.pid for c in clients]}")
            async with ApiPool(stack.home, args.api) as api:
                await settle(pid)
                await asyncio.sleep(args.settle)
                outcome.baseline = Memory.read(pid)
                print(f"controller RSS with no agent: {outcome.baseline.rss / MIB:.1f} MiB")
                tickets: list[str] = []
                joined = 0
                for target in args.tiers:
                    tier = await join_tier(
                        args, pid, api, clients, tickets, joined, target, outcome
                    )
                    outcome.tiers.append(tier)
                    joined = target
                top = outcome.tiers[-1].agents
                if args.profile:
                    _, outcome.profiles["idle"] = await spied(
                        args, pid, spydir, "idle", asyncio.sleep(args.idle_window)
                    )
                from protocol.codec import API_MAX_FRAME

                connected, size, seconds = await sessions_probe(api)
                outcome.notes.append(
                    f"`sessions.list` with {top:,} live sessions: {seconds * 1e3:,.0f} ms, a "
                    f"reply of {size / MIB:.1f} MiB (the API's frame limit is "
                    f"{API_MAX_FRAME / MIB:g} MiB: about {API_MAX_FRAME * top // size:,} "
                    "sessions)"
                )
                if connected != top:
                    outcome.notes.append(
                        f"the controller showed {connected:,} agents connected, the clients "
                        f"held {top:,}"
                    )
                dropped, seen = await drop(api, clients)
                outcome.storm = await resume(args, "resume", pid, clients, dropped, seen)
                await settle(pid)
                await asyncio.sleep(args.settle)
                outcome.after_storm = Memory.read(pid)
                print(f"controller RSS after the resume: {outcome.after_storm.rss / MIB:.1f} MiB")
                back = await connected_count(api)
                if back != outcome.storm.resumed:
                    outcome.notes.append(
                        f"after the resume the controller showed {back:,} agents connected, "
                        f"the clients {outcome.storm.resumed:,}"
                    )
                if args.profile:
                    dropped, seen = await drop(api, clients)
                    outcome.profiled, outcome.profiles["resume"] = await spied(
                        args,
                        pid,
                        spydir,
                        "resume",
                        resume(args, "resume, py-spy", pid, clients, dropped, seen),
                    )
        finally:
            others = machine_busy_seconds() - machine_before - (own_busy_seconds() - own_before)
            outcome.others_percent = max(0.0, others) / (time.monotonic() - started) * 100
            await stop_clients(clients)
            if stack.controller is not None:
                h.stop_process(stack.controller, grace=30)
            for log in stack.logs:
                log.close()
            read_log(tmp / "controller.log", outcome)
    return outcome


# -- reporting ----------------------------------------------------------------------------

MEMORY_HEADER = [
    "agents",
    "RSS MiB",
    "USS MiB",
    "KiB per agent",
    "marginal KiB per agent",
    "idle CPU % of a core",
    "joins/s",
    "controller CPU ms per join",
    "codes/s",
]


def memory_rows(outcome: Outcome) -> list[list[str]]:
    assert outcome.baseline is not None
    base = outcome.baseline
    rows = [["0", f"{base.rss / MIB:.1f}", f"{base.uss / MIB:.1f}", *[""] * 6]]
    previous = (0, base.rss)
    for tier in outcome.tiers:
        m = tier.memory
        per = (m.rss - base.rss) / max(1, tier.agents) / KIB
        marginal = (m.rss - previous[1]) / max(1, tier.agents - previous[0]) / KIB
        rows.append(
            [
                f"{tier.agents:,}",
                f"{m.rss / MIB:.1f}",
                f"{m.uss / MIB:.1f}",
                f"{per:.1f}",
                f"{marginal:.1f}",
                f"{tier.idle_cpu_percent:.1f}",
                f"{tier.joined / tier.join_seconds:,.0f}",
                f"{tier.join_cpu_ms:.1f}",
                f"{tier.codes_per_s:,.0f}",
            ]
        )
        previous = (tier.agents, m.rss)
    return rows


def figures(outcome: Outcome) -> list[list[str]]:
    rows: list[list[str]] = []
    if outcome.tiers and outcome.baseline is not None:
        top = outcome.tiers[-1]
        per = (top.memory.rss - outcome.baseline.rss) / max(1, top.agents) / KIB
        rows.append(
            [
                "idle agents held by one controller process",
                f"{top.agents:,}",
                f"≥ {TARGET_AGENTS:,}",
                h.verdict(top.agents >= TARGET_AGENTS),
            ]
        )
        floor = f"{outcome.floor.kib_each:.1f} KiB" if outcome.floor else ""
        rows.append(
            [
                f"controller RSS per idle agent at {top.agents:,} (over the empty controller)",
                f"{per:.1f} KiB",
                f"≤ {TARGET_KIB_PER_AGENT:g} KB",
                h.verdict(per <= TARGET_KIB_PER_AGENT),
                floor,
            ]
        )
    storm = outcome.storm
    if storm is not None:
        rows.append(
            [
                f"agents accepted and resumed per second, {storm.wanted:,} at once",
                f"{storm.rate:,.0f}/s",
                f"≥ {TARGET_ACCEPTS_PER_S:g}/s",
                h.verdict(storm.rate >= TARGET_ACCEPTS_PER_S),
                f"{outcome.floor.rate:,.0f}/s" if outcome.floor else "",
            ]
        )
        all_back = storm.resumed == storm.wanted
        rows.append(
            [
                f"time for all {storm.wanted:,} to be back",
                f"{storm.seconds:.1f} s" + ("" if all_back else f" ({storm.resumed:,} back)"),
                f"≤ {TARGET_RECONNECT_S:g} s for {TARGET_AGENTS:,}",
                h.verdict(
                    all_back
                    and storm.seconds <= TARGET_RECONNECT_S
                    and storm.wanted >= TARGET_AGENTS
                ),
                f"{outcome.floor.seconds:.1f} s" if outcome.floor else "",
            ]
        )
    for row in rows:
        row += [""] * (5 - len(row))
    return rows


FIGURES_HEADER = ["figure", "helpline", "target", "verdict", "floor: bare websockets + TLS"]


def storm_rows(outcome: Outcome) -> list[list[str]]:
    rows: list[list[str]] = []
    for storm in (outcome.storm, outcome.profiled):
        if storm is None:
            continue
        rows.append(
            [
                storm.label,
                f"{storm.resumed:,}/{storm.wanted:,}",
                f"{storm.seconds:.2f}",
                f"{storm.rate:,.0f}",
                f"{storm.latency_ms(0.5):.0f} / {storm.latency_ms(0.99):.0f} / "
                f"{storm.latency_ms(1.0):.0f}",
                f"{storm.cpu_ms_each:.2f}",
                f"{storm.clients_cpu_s / max(1, storm.resumed) * 1e3:.2f}",
                f"{sum(storm.retries.values())}",
            ]
        )
    if outcome.floor is not None:
        f = outcome.floor
        rows.append(
            [
                "floor: bare TLS + websocket handshake",
                f"{f.opened:,}/{f.wanted:,}",
                f"{f.seconds:.2f}",
                f"{f.rate:,.0f}",
                "",
                f"{f.cpu_ms_each:.2f}",
                "",
                "",
            ]
        )
    return rows


STORM_HEADER = [
    "run",
    "back",
    "seconds",
    "per second",
    "latency p50 / p99 / max ms",
    "server CPU ms each",
    "clients CPU ms each",
    "retries",
]


def profile_lines(args: argparse.Namespace, outcome: Outcome) -> list[str]:
    lines: list[str] = []
    titles = {
        "idle": f"the controller idle with {outcome.tiers[-1].agents:,} agents "
        f"({args.idle_window:g} s, after the measured window)"
        if outcome.tiers
        else "idle",
        "resume": "a second resume of every agent after another drop (`resume, py-spy` "
        "above; py-spy attached after the drop)",
    }
    for what, profile in outcome.profiles.items():
        lines += [
            "",
            f"### Controller profile: {titles.get(what, what)}",
            "",
            f"`py-spy record --nonblocking --rate {args.profile_rate}`: {profile.working} "
            f"working samples (+{profile.waiting} blocked in epoll_wait or aiosqlite's queue, "
            "left out). By package of the running frame: "
            + ", ".join(f"{name} {pct:.1f} %" for name, pct in profile.by_area),
            "",
            *h.table(
                ["own time: function (module)", "%"],
                [[f"`{name}`", f"{pct:.1f}"] for name, pct in profile.self_top],
            ),
        ]
        if profile.inclusive_ours:
            lines += [
                "",
                *h.table(
                    ["inclusive, our code: function (module)", "%"],
                    [[f"`{name}`", f"{pct:.1f}"] for name, pct in profile.inclusive_ours],
                ),
            ]
    return lines


def newest_source() -> str:
    """Which of our source files changed last, and when: the tree, without git."""
    parts = ("controller", "protocol", "agent")
    files = [p for part in parts for p in (h.REPO / part).rglob("*.py")]
    newest = max(files, key=lambda p: p.stat().st_mtime)
    when = datetime.fromtimestamp(newest.stat().st_mtime, UTC)
    return f"{newest.relative_to(h.REPO)}, modified {when:%Y-%m-%d %H:%M:%S} UTC"


def machine_lines(outcome: Outcome) -> list[str]:
    """The harness's machine lines, without its git call: this benchmark runs no git."""
    with mock.patch.object(h, "git_tree", return_value=""):
        lines = h.machine_lines()
    return [*lines, f"- tree: not recorded (no git here); newest source file {outcome.sources}"]


def section(args: argparse.Namespace, outcome: Outcome) -> str:
    lines = [
        "## Idle agents on one controller, and reconnects (`bench/idle_agents.py`)",
        "",
        *machine_lines(outcome),
        f"- command: `{h.command_line()}`",
        f"- what: one `helpline serve` process (SQLite store) on 127.0.0.1; {args.clients} "
        "client processes drive real agent conversations: `AgentSession` over websockets, "
        "TLS 1.3 with the pin checked, a real Ed25519 key and signature per agent, `join` "
        f"with a fresh code from `code.issue` ({args.api} API connections), consent yes, "
        f"{args.per_ticket} agents to a ticket, each agent from its own 127.x.y.z address, "
        f"{args.join_window} joins in flight per client process; then idle with the agent's "
        f"heartbeat (websockets pings every {HEARTBEAT_SECONDS:g} s, both ways). Client "
        "processes set `SSLProtocol.max_size` to 16 KiB like the agent; the controller sets "
        "it itself. RSS is the controller's VmRSS once it is quiet; KiB = 1024 bytes (the "
        "target's 50 KB read as 50 KiB); "
        f"idle CPU over {args.idle_window:g} s; CPU per join or resume is all of the "
        "controller's CPU over the phase (idle heartbeats included) divided by the count. "
        "Reconnects: every agent connection aborted at once; once `sessions.list` shows "
        f"none connected, all `resume` with the saved session id, {args.resume_window} in "
        "flight per client process (retry with full jitter), timed from the first connect "
        "to the last `session_started`. Floor: the same clients and count against a bare "
        "websockets server in its own process with the controller's certificate, TLS "
        "context and settings (16 KiB TLS read buffer), nothing of ours. Clients and server "
        f"share the machine's {os.cpu_count()} cores.",
        "",
        *h.table(FIGURES_HEADER, figures(outcome)),
    ]
    if outcome.tiers:
        lines += [
            "",
            "Controller memory and CPU by number of idle agents (per agent: over the empty "
            "controller; marginal: over the previous row):",
            "",
            *h.table(MEMORY_HEADER, memory_rows(outcome)),
        ]
    rows = storm_rows(outcome)
    if rows:
        lines += [
            "",
            "Reconnects (latency: an agent's first attempt to its `session_started`; CPU: "
            "user + system over the storm divided by the connections):",
            "",
            *h.table(STORM_HEADER, rows),
        ]
    extra = []
    if outcome.tiers:
        extra.append(
            f"`ticket.open` through the API: {outcome.tickets_per_s:,.0f}/s; `code.issue`: "
            + ", ".join(
                f"{t.codes_per_s:,.0f}/s ({t.code_cpu_ms:.1f} ms controller CPU each) up to "
                f"{t.agents:,}"
                for t in outcome.tiers
            )
        )
    if outcome.storm is not None:
        extra.append(
            f"the controller saw all {outcome.storm.wanted:,} dropped connections within "
            f"{outcome.storm.drop_seconds:.1f} s (`sessions.list` polled every 0.5 s)"
        )
    if outcome.after_storm is not None and outcome.tiers:
        extra.append(
            f"controller RSS after the resume: {outcome.after_storm.rss / MIB:.1f} MiB "
            f"(before the drop {outcome.tiers[-1].memory.rss / MIB:.1f} MiB; peak VmHWM "
            f"{outcome.after_storm.hwm / MIB:.1f} MiB; `sessions.list` calls of "
            f"{outcome.tiers[-1].agents:,} rows in between)"
        )
    if outcome.floor is not None:
        f = outcome.floor
        extra.append(
            f"floor server RSS {f.rss_empty / MIB:.1f} MiB empty, {f.rss_held / MIB:.1f} MiB "
            f"holding {f.opened:,} connections: {f.kib_each:.1f} KiB each"
        )
    for storm in (outcome.storm, outcome.profiled):
        if storm is not None and (storm.failures or storm.retries):
            extra.append(f"{storm.label}: retries {storm.retries}, failures {storm.failures}")
    extra += [
        f"joins up to {t.agents:,}: failures {t.failures}" for t in outcome.tiers if t.failures
    ]
    extra.append(
        f"other processes on the machine used {outcome.others_percent:.0f} % of a core on "
        "average during the run (machine CPU from /proc/stat minus this benchmark's processes)"
    )
    extra += outcome.notes
    if outcome.log_lines:
        extra.append(
            f"controller log: {outcome.log_lines:,} lines, of which "
            f"{outcome.log_connection_lines:,} are websockets' INFO `connection open` / "
            "`connection closed`"
        )
    if outcome.log_problems:
        problems = "; ".join(f"`{p}`" for p in outcome.log_problems)
        extra.append(f"controller log problems: {problems}")
    if outcome.tracebacks:
        ends = "; ".join(f"`{block[-1].strip()[:200]}`" for block in outcome.tracebacks)
        extra.append(f"controller tracebacks ({len(outcome.tracebacks)} kinds) ending in {ends}")
    if extra:
        lines += ["", *(f"- {e}" for e in extra)]
    lines += profile_lines(args, outcome)
    return "\n".join(lines)


def print_summary(outcome: Outcome) -> None:
    print()
    print("\n".join(h.table(FIGURES_HEADER, figures(outcome))))
    if outcome.tiers:
        print()
        print("\n".join(h.table(MEMORY_HEADER, memory_rows(outcome))))
    rows = storm_rows(outcome)
    if rows:
        print()
        print("\n".join(h.table(STORM_HEADER, rows)))
    for what, profile in outcome.profiles.items():
        print(f"\n== controller, {what}: {profile.working} working + {profile.waiting} blocked")
        print("  by package: " + ", ".join(f"{n} {p:.1f}%" for n, p in profile.by_area))
        for name, pct in profile.self_top:
            print(f"    {pct:5.1f}%  {name}")
        print("  inclusive, our code:")
        for name, pct in profile.inclusive_ours:
            print(f"    {pct:5.1f}%  {name}")
    for problem in outcome.log_problems:
        print(f"controller log: {problem}")
    for block in outcome.tracebacks:
        print("controller traceback:\n" + "\n".join(block[-40:]))
    for note in outcome.notes:
        print(f"note: {note}")
    print(f"note: other processes used {outcome.others_percent:.0f} % of a core on average")


# -- main ---------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else "")
    parser.add_argument(
        "--tiers", default="1000,5000,10000", help="agents joined at each reading (1000,5000,10000)"
    )
    parser.add_argument("--quick", action="store_true", help="smoke run: tiers 100,300")
    parser.add_argument("--clients", type=int, default=2, help="client processes (2)")
    parser.add_argument("--per-ticket", type=int, default=50, help="agents to a ticket (50)")
    parser.add_argument("--api", type=int, default=8, help="API connections issuing codes (8)")
    parser.add_argument(
        "--join-window", type=int, default=24, help="joins in flight per client process (24)"
    )
    parser.add_argument(
        "--resume-window", type=int, default=128, help="resumes in flight per client (128)"
    )
    parser.add_argument(
        "--idle-window",
        type=float,
        default=HEARTBEAT_SECONDS,
        help="idle CPU window, s (20: one heartbeat period, so every connection pings once)",
    )
    parser.add_argument("--settle", type=float, default=2.0, help="quiet seconds before RSS (2)")
    parser.add_argument("--no-floor", action="store_true", help="skip the bare websockets floor")
    parser.add_argument("--no-write", action="store_true", help="do not touch RESULTS.md")
    parser.add_argument(
        "--profile", action="store_true", help="py-spy the idle controller and a second resume"
    )
    parser.add_argument("--profile-rate", type=int, default=200, help="py-spy samples/s (200)")
    parser.add_argument("--profile-dir", type=Path, help="keep py-spy raw stacks here")
    parser.add_argument(
        "--phase-timeout", type=float, default=400.0, help="limit of each phase, s (400)"
    )
    parser.add_argument("--timeout", type=int, default=1500, help="overall limit, s (1500)")
    # internal: client workers and the floor server run this same file
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--floor-serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--home", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--lifetime", type=float, default=1500.0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.tiers = "100,300"
        args.idle_window = min(args.idle_window, 3.0)
    try:
        args.tiers = sorted({int(t) for t in str(args.tiers).split(",") if t.strip()})
    except ValueError:
        parser.error("--tiers takes numbers separated by commas")
    if not args.tiers or args.tiers[0] < 1 or args.clients < 1 or args.per_ticket < 1:
        parser.error("tiers, --clients and --per-ticket must be ≥ 1")
    if max(args.tiers) / args.clients > 9_000:
        # each client holds its agents and, for the floor, as many again (fd limit 20,000)
        parser.error("more than 9,000 agents per client process: add --clients")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker:
        return worker_main()
    if args.floor_serve:
        if args.port is None or args.home is None:
            raise SystemExit("--floor-serve needs --port and --home")
        asyncio.run(floor_serve(args.home, args.port, HEARTBEAT_SECONDS, args.lifetime))
        return 0
    h.install_deadline(args.timeout)
    try:
        outcome = asyncio.run(benchmark(args))
    except h.BenchError as exc:
        print(f"benchmark failed: {exc}", file=sys.stderr)
        return 1
    print_summary(outcome)
    if not args.no_write:
        h.update_results("idle_agents", section(args, outcome))
        print(f"\nwritten to {h.RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
