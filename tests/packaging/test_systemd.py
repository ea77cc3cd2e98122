"""The .deb on a Debian system booted under real systemd (tests/packaging/nspawn.py).

The rest of the packaging tests install into a throwaway root with no init; here the
package meets a real systemd 252 as PID 1: its maintainer scripts start and stop real
units, the hardened unit really runs the agent (its user, no new privileges, no
capabilities, a syscall filter, a read-only /usr), the root helper is started by real
socket activation, and the fixes that need root act on the container's real systemd and
journald. The controller runs on the host's 127.0.0.1 and the container shares that
network, so everything crosses real TLS.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from controller.catalogue import builtin_dir
from tests.conftest import scaled
from tests.e2e.conftest import Controller, wait_until
from tests.e2e.test_fixes import _login
from tests.packaging.conftest import (
    WHOAMI_FIX,
    need_root,
    need_tool,
    package,
    public_dir,
    remove_tree,
)
from tests.packaging.nspawn import Container, ContainerError, base_root

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

ESCAPE = """\
id = "test.escape"
title = "Leave something behind"
description = "Starts a process in a session of its own, which outlives the fix's group."
command = ["{python}", "-c", "import subprocess as s; print(s.Popen(['sleep', '613'], \
start_new_session=True, stdout=s.DEVNULL, stderr=s.DEVNULL).pid)"]
timeout = 30
needs_root = true
"""
#: a service resumed by systemd has no one at a terminal: these run without asking
UNATTENDED = ("test.whoami", "test.escape", "service.reset_failed", "disk.vacuum_journal")
STATE = "/var/lib/helpline-agent"
SOCKET = "/run/helpline-agent-root.sock"


@pytest.fixture(scope="module")
def debs(controller: Controller, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Revisions 1 and 2 of the .deb, for a controller with a published catalogue, in a
    directory the container mounts at /opt/helpline-test."""
    need_root("boots a container")
    for tool in ("systemd-nspawn", "debootstrap", "nsenter", "dpkg-deb"):
        need_tool(tool, "boots a Debian system under systemd for the .deb")
    tmp = tmp_path_factory.mktemp("catalogue")
    catalogue = tmp / "catalogue"
    shutil.copytree(builtin_dir(), catalogue)
    (catalogue / "test.whoami").mkdir()
    (catalogue / "test.whoami/fix.toml").write_text(WHOAMI_FIX)
    (catalogue / "test.escape").mkdir()
    (catalogue / "test.escape/fix.toml").write_text(ESCAPE)
    controller.json("fixes", "keygen", "--out", str(tmp / "fixkey"))
    controller.json(
        "fixes", "sign", str(catalogue), "--key", str(tmp / "fixkey"), "--out", str(tmp / "b.json")
    )
    controller.json("fixes", "publish", str(tmp / "b.json"), "--replace-key")
    out = public_dir("helpline-debs-")
    unattended = [arg for fix in UNATTENDED for arg in ("--unattended", fix)]
    for revision in (1, 2):
        built = package(controller, "deb", out, "--revision", str(revision), *unattended)
        Path(built["path"]).rename(out / f"rev{revision}.deb")
    try:
        yield out
    finally:
        remove_tree(out)


@pytest.fixture(scope="module")
def debian_root() -> Path:
    need_root("boots a container")
    # before debootstrap runs: a machine without the tools skips (fails in CI), never errors
    for tool in ("debootstrap", "systemd-nspawn"):
        need_tool(tool, "boots a Debian system under systemd for the .deb")
    try:
        return base_root()
    except (ContainerError, OSError, subprocess.TimeoutExpired) as exc:
        pytest.fail(f"cannot make the Debian tree for the container: {exc}", pytrace=False)


@pytest.fixture
def machine(debian_root: Path, debs: Path, tmp_path: Path) -> Iterator[Container]:
    with Container(debian_root, tmp_path / "console.log", binds={debs: "/opt/helpline-test"}) as c:
        yield c


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout.strip()


def fix(controller: Controller, tech: dict[str, str], ticket: str, *args: str) -> dict[str, Any]:
    done = controller.cli("fix", ticket, *args, "--json", check=False, env=tech)
    assert done.returncode == 0, done.stdout + done.stderr
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def status(machine: Container, pid: str) -> dict[str, str]:
    lines = ok(machine.run("cat", f"/proc/{pid}/status")).splitlines()
    return {key: value.strip() for key, _, value in (line.partition(":") for line in lines)}


def test_the_deb_under_systemd_from_install_to_purge(
    machine: Container, controller: Controller, tmp_path: Path
) -> None:
    ok(machine.run("dpkg", "-i", "/opt/helpline-test/rev1.deb"))
    # postinst: the root helper's socket listens; the agent waits for a joined session
    assert ok(machine.run("systemctl", "is-active", "helpline-agent-root.socket")) == "active"
    assert ok(machine.run("systemctl", "is-enabled", "helpline-agent.service")) == "enabled"
    inactive = machine.run("systemctl", "is-active", "helpline-agent.service")
    assert inactive.stdout.strip() == "inactive"
    assert ok(machine.run("stat", "-c", "%a %U %G", SOCKET)) == "660 root helpline-agent"
    uid = ok(machine.run("id", "-u", "helpline-agent"))

    # a person at the machine joins, then the agent is stopped as a service stop would
    tech = _login(controller, tmp_path, "sid", "L3")
    ticket = controller.open_ticket()
    join = subprocess.Popen(
        machine.command("helpline-agent", "join", controller.issue_code(ticket), "--yes"),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
    )
    try:
        first = controller.connected_session(ticket)
        ok(machine.run("sh", "-c", f"kill -HUP $(cat {STATE}/agent.pid)"))
        assert join.wait(scaled(20)) == 0
    finally:
        if join.poll() is None:
            join.kill()
    assert ok(machine.run("test", "-s", f"{STATE}/session.json")) == ""
    identity = ok(machine.run("sha256sum", f"{STATE}/agent.key"))

    # the unit resumes it, confined
    ok(machine.run("systemctl", "start", "helpline-agent.service"))
    wait_until(
        lambda: any(s["ticket"] == ticket and s["connected"] for s in controller.json("sessions")),
        scaled(30),
        "the service to resume the session",
    )
    pid = ok(machine.run("systemctl", "show", "-p", "MainPID", "--value", "helpline-agent"))
    confined = status(machine, pid)
    assert confined["Uid"].split()[:2] == [uid, uid]
    assert confined["NoNewPrivs"] == "1"
    assert confined["CapEff"] == confined["CapBnd"] == "0000000000000000"
    assert confined["Seccomp"] == "2"
    gid = ok(machine.run("id", "-g", "helpline-agent"))
    as_agent = ("nsenter", "-t", pid, "-m", "-S", uid, "-G", gid)
    blocked = machine.run(*as_agent, "touch", "/usr/helpline-probe")
    assert "Read-only file system" in blocked.stderr, blocked.stderr
    ok(machine.run(*as_agent, "touch", f"{STATE}/probe"))  # its own state stays writable

    # a fix that needs root: socket activation starts the root helper for the agent
    whoami = fix(controller, tech, ticket, "test.whoami")
    assert whoami["status"] == "succeeded"
    assert whoami["stdout"].strip() == "euid 0"
    assert (whoami["privileged"], whoami["consent"]) == ("root helper", "unattended")
    journal = ok(machine.run("journalctl", "-u", "helpline-agent-root@*", "-o", "cat"))
    assert "running test.whoami" in journal
    assert f"uid {uid}" in journal

    # a root fix's descendant that left its process group (setsid) still goes: it is in
    # the helper's unit, whose cgroup systemd empties when the helper exits
    escaped = fix(controller, tech, ticket, "test.escape")
    assert escaped["status"] == "succeeded"
    assert escaped["stdout"].strip().isdigit()  # it was started
    machine.wait_for("sh", "-c", "pgrep -f 'sleep 613' || echo gone", expect="gone")

    # real root fixes on the real service manager and journal
    machine.run("systemd-run", "--unit=helpline-broken", "--property=Type=oneshot", "false")
    machine.wait_for("systemctl", "--failed", "--plain", "--no-legend", expect="helpline-broken")
    # the confined agent's diagnostics see the failed unit (systemctl, as its own user)
    diag = controller.cli("diag", ticket, "--only", "services", "--json", env=tech)
    found = [f["rule"] for f in json.loads(diag.stdout)["findings"]]
    assert "services.failed" in found, diag.stdout[-2000:]
    controller.cli("ticket", "escalate", ticket, "--to", "L2", "--reason", "a failed service")
    reset = fix(controller, tech, ticket, "service.reset_failed")
    assert reset["status"] == "succeeded", reset
    failed = ok(machine.run("systemctl", "--failed", "--plain", "--no-legend"))
    assert "helpline-broken" not in failed
    assert reset["verification"]["cleared"] is True  # diagnostics, re-run, agree
    vacuum = fix(controller, tech, ticket, "disk.vacuum_journal", "--param", "size=64M")
    assert vacuum["status"] == "succeeded", vacuum
    assert "Vacuuming done" in vacuum["stderr"] + vacuum["stdout"]

    # stopping disconnects but keeps the session; an upgrade resumes it as the same agent
    ok(machine.run("systemctl", "stop", "helpline-agent.service"))
    assert ok(machine.run("test", "-s", f"{STATE}/session.json")) == ""
    ok(machine.run("systemctl", "start", "helpline-agent.service"))
    ok(machine.run("dpkg", "-i", "/opt/helpline-test/rev2.deb"))
    assert ok(machine.run("systemctl", "is-active", "helpline-agent.service")) == "active"
    assert ok(machine.run("sha256sum", f"{STATE}/agent.key")) == identity
    resumed = controller.connected_session(ticket)
    assert resumed["agent"] == first["agent"]

    # the customer leaves: the unit ends cleanly and does not restart
    ok(machine.run("helpline-agent", "leave"))
    machine.wait_for("systemctl", "is-active", "helpline-agent.service", expect="inactive")
    assert machine.run("test", "-e", f"{STATE}/session.json").returncode == 1

    # purge: no files, no user, no units, no socket
    ok(machine.run("dpkg", "-P", "helpline-agent"))
    for gone in (STATE, "/var/lib/helpline-agent-root", "/etc/helpline-agent", SOCKET):
        assert machine.run("test", "-e", gone).returncode == 1, gone
    assert machine.run("getent", "passwd", "helpline-agent").returncode == 2
    units = machine.run("systemctl", "list-unit-files", "--no-legend", "helpline*").stdout
    assert units.strip() == ""


def test_only_the_agent_reaches_the_root_helper_under_systemd(machine: Container) -> None:
    ok(machine.run("dpkg", "-i", "/opt/helpline-test/rev1.deb"))
    knock = "import socket, sys; socket.socket(socket.AF_UNIX).connect(sys.argv[1])"
    nobody = machine.run("setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups",
                         "python3", "-c", knock, SOCKET)  # fmt: skip
    assert "PermissionError" in nobody.stderr, nobody.stdout + nobody.stderr
    # root gets through the socket's mode but not past the helper's uid check, and is logged
    ask = (
        "import json, socket, sys\n"
        "s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1])\n"
        "s.sendall(b'{}\\n'); print(s.makefile().readline())"
    )
    answer = json.loads(ok(machine.run("python3", "-c", ask, SOCKET)))
    assert answer["refused"]["code"] == "not_agent"
    journal = machine.wait_for(
        "journalctl", "-u", "helpline-agent-root@*", "-o", "cat", expect="not the agent's user"
    )
    assert "uid 0" in journal
    # an admin who wants no root fixes turns the socket off
    ok(machine.run("systemctl", "disable", "--now", "helpline-agent-root.socket"))
    assert machine.run("test", "-e", SOCKET).returncode == 1
