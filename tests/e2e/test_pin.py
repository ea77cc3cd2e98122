"""Pin before any byte: a TLS server with another certificate never sees the upgrade.

The impostor is a plain TLS 1.3 server (the standard library's, not websockets) on
127.0.0.1 with its own self-signed certificate. It records every application byte it
receives after its handshake; the agent and the technician CLI must send none, exit 5,
and name both fingerprints.
"""

from __future__ import annotations

import signal
import socket
import ssl
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from controller.tls import make_self_signed
from tests.conftest import scaled
from tests.e2e.conftest import Controller, wait_until


@dataclass
class Impostor:
    """A TLS server that completes handshakes and counts what it is sent afterwards."""

    pin: str
    port: int
    handshakes: int = 0
    #: connections that ended (the peer closed or aborted): what they sent is all in
    ended: int = 0
    received: bytearray = field(default_factory=bytearray)

    @property
    def url(self) -> str:
        return f"wss://127.0.0.1:{self.port}"


@pytest.fixture
def impostor(tmp_path: Path) -> Iterator[Impostor]:
    pin = make_self_signed("127.0.0.1", tmp_path / "impostor.pem", tmp_path / "impostor.key")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.load_cert_chain(tmp_path / "impostor.pem", tmp_path / "impostor.key")
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    listener.settimeout(0.2)
    server = Impostor(pin=pin, port=listener.getsockname()[1])
    stop = threading.Event()

    def serve_one(raw: socket.socket) -> None:
        raw.settimeout(scaled(5))
        try:
            with context.wrap_socket(raw, server_side=True) as tls:
                server.handshakes += 1
                while chunk := tls.recv(65536):
                    server.received.extend(chunk)
        except (OSError, ssl.SSLError):
            pass  # the client aborting the connection is the expected end
        finally:
            server.ended += 1

    def accept() -> None:
        while not stop.is_set():
            try:
                raw, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            serve_one(raw)

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        stop.set()
        thread.join(scaled(10))
        listener.close()


def _assert_refused(output: str, expected: str, impostor: Impostor) -> None:
    wait_until(lambda: impostor.ended >= 1, 10, "the impostor's connection to end")
    assert impostor.handshakes == impostor.ended == 1
    assert bytes(impostor.received) == b""
    assert "does not match the pinned fingerprint" in output, output
    assert f"sha256:{expected}" in output, output
    assert f"sha256:{impostor.pin}" in output, output
    assert "timed out" not in output


def test_agent_join_sends_nothing_to_a_server_with_another_certificate(
    controller: Controller, impostor: Impostor, tmp_path: Path
) -> None:
    pin = controller.json("agent-config", "--out", str(tmp_path / "real.toml"))["pin"]
    assert pin != impostor.pin
    config = tmp_path / "impostor.toml"
    config.write_text(f'url = "{impostor.url}"\npin = "{pin}"\n')
    agent = controller.start_agent("ABCDE-FGHJK", config=config)
    assert agent.wait() == 5
    _assert_refused(agent.output(), pin, impostor)


def test_resuming_agent_stops_at_a_server_with_another_certificate(
    controller: Controller, impostor: Impostor, tmp_path: Path
) -> None:
    ticket = controller.open_ticket()
    agent = controller.start_agent(controller.issue_code(ticket))
    controller.connected_session(ticket)
    agent.process.send_signal(signal.SIGHUP)  # stop, keeping the session to resume
    assert agent.wait() == 0
    assert (agent.home / "session.json").exists()
    pin = controller.json("agent-config", "--out", str(tmp_path / "real.toml"))["pin"]
    config = tmp_path / "impostor.toml"
    config.write_text(f'url = "{impostor.url}"\npin = "{pin}"\n')
    resume = subprocess.run(
        [sys.executable, "-m", "agent", "resume", "--config", str(config), "--home", agent.home],
        env=controller.env,
        capture_output=True,
        text=True,
        timeout=scaled(30),
    )
    assert resume.returncode == 5, resume.stdout + resume.stderr
    # one dial, no redial loop, and not a byte after the handshake
    _assert_refused(resume.stdout + resume.stderr, pin, impostor)
    # the session is kept: with the right controller, `resume` continues it
    assert (agent.home / "session.json").exists()


@pytest.mark.parametrize("how", ["login", "call"])
def test_technician_cli_sends_nothing_to_a_server_with_another_certificate(
    controller: Controller, impostor: Impostor, tmp_path: Path, how: str
) -> None:
    pin = controller.json("agent-config", "--out", str(tmp_path / "real.toml"))["pin"]
    key = controller.home / "admin_ed25519"
    env = {k: v for k, v in controller.env.items() if k != "HELPLINE_HOME"}
    if how == "login":
        args: tuple[str, ...] = ("login", "--url", impostor.url, "--pin", pin, "--key", str(key))
    else:
        client = tmp_path / "client.toml"
        client.write_text(f'url = "{impostor.url}"\npin = "{pin}"\nkey = "{key}"\n')
        env["HELPLINE_CLIENT_CONFIG"] = str(client)
        args = ("ticket", "list", "--json")
    result = controller.cli(*args, check=False, env=env)
    assert result.returncode == 5, result.stdout + result.stderr
    _assert_refused(result.stderr, pin, impostor)
