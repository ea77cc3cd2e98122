"""Technicians: enrolment by SSH key (file or ssh-agent; Ed25519, ECDSA, RSA) and login."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.e2e.conftest import Controller, ssh_keygen
from tests.services import require_tool


def _keygen(path: Path, kind: str) -> Path:
    return ssh_keygen(path, kind)


def _remote_env(controller: Controller, tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in controller.env.items() if k != "HELPLINE_HOME"}
    env["HELPLINE_CLIENT_CONFIG"] = str(tmp_path / "tech-client.toml")
    return env


@pytest.mark.parametrize("kind", ["ed25519", "ecdsa", "rsa"])
def test_enrolled_technician_logs_in_and_works(
    controller: Controller, tmp_path: Path, kind: str
) -> None:
    key = _keygen(tmp_path / f"tech_{kind}", kind)
    added = controller.json(
        "user", "add", "alice", "--role", "technician", "--level", "L2", "--key", f"{key}.pub"
    )
    assert added["level"] == "L2"
    pin = controller.json("agent-config", "--out", str(tmp_path / "a.toml"))["pin"]
    env = _remote_env(controller, tmp_path)
    login = controller.cli(
        "login", "--url", controller.url, "--pin", pin, "--key", str(key), "--json", env=env
    )
    assert '"alice"' in login.stdout
    opened = controller.cli(
        "ticket", "open", "--title", "Printer", "--customer", "ACME", "--json", env=env
    )
    assert '"opened_by": "alice"' in opened.stdout
    # technicians cannot enrol users; the refusal is audited
    refused = controller.cli("user", "add", "mallory", "--key", f"{key}.pub", check=False, env=env)
    assert refused.returncode == 4
    assert "not allowed" in refused.stderr
    assert controller.json("audit", "log", "--type", "api.forbidden")


def test_key_from_ssh_agent(controller: Controller, tmp_path: Path) -> None:
    ssh_agent = require_tool("ssh-agent", "holds the technician's key")
    ssh_add = require_tool("ssh-add", "loads the key into ssh-agent")
    key = _keygen(tmp_path / "agent_key", "ed25519")
    controller.json("user", "add", "bob", "--key", f"{key}.pub")
    socket_path = tmp_path / "ssh-agent.sock"
    agent = subprocess.Popen([ssh_agent, "-D", "-a", str(socket_path)], stdout=subprocess.DEVNULL)
    try:
        env = _remote_env(controller, tmp_path)
        env["SSH_AUTH_SOCK"] = str(socket_path)
        for _ in range(100):
            if socket_path.exists():
                break
            subprocess.run(["sleep", "0.05"], check=True)
        subprocess.run([ssh_add, "-q", str(key)], env=env, check=True)
        os.unlink(key)  # only ssh-agent holds the private half now
        pin = controller.json("agent-config", "--out", str(tmp_path / "a.toml"))["pin"]
        login = controller.cli(
            "login", "--url", controller.url, "--pin", pin, "--key", f"{key}.pub", "--json", env=env
        )
        assert '"bob"' in login.stdout
        listed = controller.cli("ticket", "list", "--json", env=env)
        assert listed.stdout.strip() == "[]"
    finally:
        agent.terminate()
        agent.wait()


def test_wrong_pin_on_login(controller: Controller, tmp_path: Path) -> None:
    key = _keygen(tmp_path / "k", "ed25519")
    result = controller.cli(
        "login",
        "--url",
        controller.url,
        "--pin",
        "cd" * 32,
        "--key",
        str(key),
        check=False,
        env=_remote_env(controller, tmp_path),
    )
    assert result.returncode == 5
    assert "does not match" in result.stderr


def test_a_wrong_pin_at_login_tells_the_technician_what_to_check(
    controller: Controller, tmp_path: Path
) -> None:
    key = _keygen(tmp_path / "k", "ed25519")
    controller.json("user", "add", "carol", "--key", f"{key}.pub")
    env = _remote_env(controller, tmp_path)
    wrong = "ab" * 32
    login = controller.cli(
        "login", "--url", controller.url, "--pin", wrong, "--key", str(key), check=False, env=env
    )
    assert login.returncode == 5
    assert f"pinned:    sha256:{wrong}" in login.stderr
    assert "Check the --pin" in login.stderr
    assert "agent config" not in login.stderr  # that advice is for customers
    assert not Path(env["HELPLINE_CLIENT_CONFIG"]).exists()  # nothing saved
