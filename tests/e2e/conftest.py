"""Real processes over real TLS on 127.0.0.1: a controller, agents, and the CLI.

Nothing here is mocked: ``helpline init`` writes a home, ``helpline serve`` runs as its
own process on a free port, agents run as ``helpline-agent`` processes with their own
state directories, and every check goes through the technician CLI with ``--json``.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import scaled


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


#: ssh-keygen's -t names, as asyncssh names the algorithms
_KEY_ALGORITHMS = {"ed25519": "ssh-ed25519", "ecdsa": "ecdsa-sha2-nistp256", "rsa": "ssh-rsa"}


def ssh_keygen(path: Path, kind: str = "ed25519") -> Path:
    """An unencrypted OpenSSH key pair at ``path`` and ``path.pub``, as ``ssh-keygen -N ''``
    makes it, without needing OpenSSH's tools on the machine."""
    import asyncssh

    extra = {"key_size": 3072} if kind == "rsa" else {}
    key = asyncssh.generate_private_key(_KEY_ALGORITHMS[kind], **extra)
    path.write_bytes(key.export_private_key())
    path.chmod(0o600)  # ssh-add refuses a private key others can read
    Path(f"{path}.pub").write_bytes(key.export_public_key())
    return path


def wait_until(predicate: Callable[[], Any], seconds: float, what: str) -> Any:
    """Poll ``predicate`` until it returns something truthy; bounded in time."""
    deadline = time.monotonic() + scaled(seconds)
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {scaled(seconds):g} s waiting for {what}")


@dataclass
class Agent:
    process: subprocess.Popen[str]
    home: Path
    log: Path

    def output(self) -> str:
        return self.log.read_text()

    def wait(self, seconds: float = 15) -> int:
        return self.process.wait(scaled(seconds))


@dataclass
class Controller:
    """A controller home plus its running ``helpline serve`` process."""

    home: Path
    port: int
    tmp: Path
    env: dict[str, str]
    process: subprocess.Popen[str] | None = None
    agents: list[Agent] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"wss://127.0.0.1:{self.port}"

    def start(self) -> None:
        log = open(self.tmp / "controller.log", "a")  # noqa: SIM115 - lives with the process
        self.process = subprocess.Popen(
            [sys.executable, "-m", "controller", "serve", "--home", str(self.home)],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            text=True,
        )
        wait_until(self._listening, 20, "the controller to listen")

    def _listening(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise AssertionError(f"controller exited: {self.log()}")
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                return True
        except OSError:
            return False

    def log(self) -> str:
        path = self.tmp / "controller.log"
        return path.read_text() if path.exists() else ""

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs, as in a crash."""
        assert self.process is not None
        self.process.kill()
        self.process.wait(scaled(10))

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(scaled(10))
            except subprocess.TimeoutExpired:
                self.process.kill()

    def cli(
        self,
        *args: str,
        check: bool = True,
        input: str | None = None,
        env: dict[str, str] | None = None,
        timeout: float = 60,
    ) -> subprocess.CompletedProcess[str]:
        """Run the real ``helpline`` CLI against this controller."""
        result = subprocess.run(
            [sys.executable, "-m", "controller", *args],
            env=env or self.env,
            capture_output=True,
            text=True,
            input=input,
            timeout=scaled(timeout),
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"helpline {' '.join(args)} exited {result.returncode}\n"
                f"stdout: {result.stdout}\nstderr: {result.stderr}"
            )
        return result

    def json(self, *args: str, timeout: float = 60) -> Any:
        return json.loads(self.cli(*args, "--json", timeout=timeout).stdout)

    def agent_config(self) -> Path:
        path = self.tmp / "agent.toml"
        if not path.exists():
            self.cli("agent-config", "--out", str(path))
        return path

    def start_agent(
        self,
        code: str,
        *extra: str,
        name: str | None = None,
        config: Path | None = None,
        yes: bool = True,
        env: dict[str, str] | None = None,
        stdin: int | None = subprocess.DEVNULL,
    ) -> Agent:
        # a fresh state directory and log for each agent unless a test wants one shared
        name = name or ("agent" if not self.agents else f"agent{len(self.agents)}")
        home = self.tmp / name
        log = self.tmp / f"{name}.log"
        args = [
            sys.executable,
            "-m",
            "agent",
            "join",
            code,
            "--config",
            str(config or self.agent_config()),
            "--home",
            str(home),
            *extra,
        ]
        if yes:
            args.append("--yes")
        handle = open(log, "a")  # noqa: SIM115 - lives with the process
        process = subprocess.Popen(
            args,
            env={**self.env, **(env or {})},
            stdout=handle,
            stderr=subprocess.STDOUT,
            stdin=stdin,
            text=True,
        )
        agent = Agent(process, home, log)
        self.agents.append(agent)
        return agent

    def open_ticket(self, title: str = "Laptop slow") -> str:
        data = self.json(
            "ticket", "open", "--title", title, "--customer", "ACME", "--priority", "P2"
        )
        return str(data["id"])

    def issue_code(self, ticket: str) -> str:
        return str(self.json("code", ticket)["code"])

    def connected_session(self, ticket: str) -> dict[str, Any]:
        def find() -> dict[str, Any] | None:
            for session in self.json("sessions"):
                if session["ticket"] == ticket and session["connected"]:
                    return dict(session)
            return None

        found: dict[str, Any] = wait_until(find, 20, f"an agent connected to {ticket}")
        return found


ControllerFactory = Callable[..., Controller]


def _new_controller(base: Path, *init_args: str, env: dict[str, str] | None = None) -> Controller:
    home = base / "controller"
    full_env = {
        **os.environ,
        "HELPLINE_HOME": str(home),
        "HELPLINE_BACKOFF_BASE": "0.1",
        "HELPLINE_BACKOFF_MAX": "1",
        "HELPLINE_CLIENT_CONFIG": str(base / "client.toml"),
    }
    full_env.pop("HELPLINE_DB", None)
    full_env.update(env or {})
    return Controller(home=home, port=free_port(), tmp=base, env=full_env)


def _stop_agents(agents: list[Agent]) -> None:
    for agent in agents:
        if agent.process.poll() is None:
            agent.process.kill()
            agent.process.wait()


@pytest.fixture
def make_controller(tmp_path: Path) -> Iterator[ControllerFactory]:
    """Build and start controllers: ``make_controller(*init_args, env={...})``."""
    made: list[Controller] = []

    def make(*init_args: str, env: dict[str, str] | None = None) -> Controller:
        node = _new_controller(tmp_path / f"c{len(made)}" if made else tmp_path, env=env)
        made.append(node)
        node.cli("init", "--url", node.url, "--home", str(node.home), *init_args)
        node.start()
        return node

    try:
        yield make
    finally:
        for node in made:
            _stop_agents(node.agents)
            node.stop()


@pytest.fixture(scope="module")
def shared_controller(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Controller]:
    """One controller for a whole test module: starting one costs seconds, so modules
    whose tests each open their own ticket and read nothing another test changes share
    it (see :func:`own_agents` for what each test cleans up)."""
    node = _new_controller(tmp_path_factory.mktemp("shared"))
    node.cli("init", "--url", node.url, "--home", str(node.home))
    node.start()
    try:
        yield node
    finally:
        _stop_agents(node.agents)
        node.stop()


@pytest.fixture
def own_agents(shared_controller: Controller) -> Iterator[Controller]:
    """The module's shared controller; the agents a test starts end with the test."""
    before = len(shared_controller.agents)
    try:
        yield shared_controller
    finally:
        _stop_agents(shared_controller.agents[before:])


@pytest.fixture
def controller(make_controller: ControllerFactory) -> Controller:
    """An initialised, running controller on a free loopback port (SQLite store)."""
    return make_controller()
