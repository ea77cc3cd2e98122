"""The .deb, built by ``helpline package deb`` and installed for real into a throwaway root.

``dpkg --root=R --force-script-chrootless`` unpacks into ``R`` and runs the maintainer
scripts on this machine with ``DPKG_ROOT=R``; the scripts route every path and account
operation through it (``useradd --prefix``, deb-systemd-helper), so the system user, the
state directory and the unit's enablement all land inside ``R``. ``R`` starts as a small
copy of a Debian system (accounts, dpkg status for the package's dependencies), and after
a purge it must be exactly what it was. The installed agent runs on this machine's
``/usr/bin/python3``, as the agent user from ``R``'s passwd, against a real controller.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import scaled
from tests.e2e.conftest import Controller
from tests.e2e.test_fixes import _login
from tests.packaging.conftest import (
    WHOAMI_FIX,
    Processes,
    need_root,
    need_tool,
    package,
    public_dir,
    remove_tree,
    run,
)

pytestmark = pytest.mark.e2e

LAUNCHER = "usr/lib/helpline-agent/helpline-agent"
STATE = "var/lib/helpline-agent"
CONFIG = "etc/helpline-agent/agent.toml"
UNIT = "lib/systemd/system/helpline-agent.service"
ENABLED = "etc/systemd/system/multi-user.target.wants/helpline-agent.service"
ROOT_LAUNCHER = "usr/lib/helpline-agent/helpline-agent-root"
ROOT_SOCKET_UNIT = "lib/systemd/system/helpline-agent-root.socket"
ROOT_SERVICE_UNIT = "lib/systemd/system/helpline-agent-root@.service"
SOCKET_ENABLED = "etc/systemd/system/sockets.target.wants/helpline-agent-root.socket"
ACCOUNT_FILES = ("passwd", "group", "shadow", "gshadow")
DEPENDENCIES = ("python3", "passwd", "init-system-helpers")
#: Directories a Debian system already has, owned by other packages.
BASE_DIRS = (
    "etc/systemd/system/multi-user.target.wants",
    "lib/systemd/system",
    "usr/bin",
    "usr/lib",
    "usr/sbin",
    "usr/share/doc",
    "var/lib/systemd",
    "var/log",
    "tmp",
)
#: dpkg's own bookkeeping, which any dpkg run touches.
DPKG_BOOKKEEPING = ("var/lib/dpkg/", "var/log/dpkg.log")
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@pytest.fixture(scope="module")
def debs(controller: Controller, tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    """Two builds for the controller: revision 1 and its upgrade, revision 2."""
    need_tool("dpkg-deb", "builds the .deb")
    out = tmp_path_factory.mktemp("debs")
    return [package(controller, "deb", out, "--revision", str(r)) for r in (1, 2)]


def dpkg(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run(
        [
            "dpkg",
            f"--root={root}",
            "--force-script-chrootless",
            f"--log={root}/var/log/dpkg.log",
            *args,
        ],
        env={**os.environ, "PATH": PATH},
    )


def listing(root: Path) -> set[str]:
    """Every path under ``root`` except dpkg's bookkeeping, with a type marker."""
    found = set()
    for path in root.rglob("*"):
        relative = path.relative_to(root).as_posix()
        if relative.startswith(DPKG_BOOKKEEPING) and not relative.startswith(
            "var/lib/dpkg/info/helpline"
        ):
            continue
        kind = "l" if path.is_symlink() else "d" if path.is_dir() else "f"
        found.add(f"{kind} {relative}")
    return found


@pytest.fixture
def fake_root() -> Iterator[Path]:
    """A throwaway root shaped like a small Debian system (see the module docstring)."""
    need_root("installs a package, makes a system user and changes file owners")
    need_tool("dpkg", "installs the .deb")
    for tool in ("useradd", "userdel", "groupdel", "deb-systemd-helper"):
        need_tool(tool, "used by the package's maintainer scripts")
    base = public_dir("helpline-root-")
    root = base / "root"
    try:
        for directory in ("var/lib/dpkg/info", "var/lib/dpkg/updates", *BASE_DIRS):
            (root / directory).mkdir(parents=True, exist_ok=True)
        (root / "etc/systemd/system/multi-user.target.wants/other.service").symlink_to(
            "/lib/systemd/system/other.service"
        )
        status, owned = [], ["/.", *(f"/{d}" for d in BASE_DIRS)]
        for name in DEPENDENCIES:
            stanza = run(["dpkg-query", "-s", name]).stdout
            if not stanza:
                pytest.skip(f"this machine has no {name} package to mirror into the test root")
            status.append("\n".join(line for line in stanza.splitlines() if line))
        (root / "var/lib/dpkg/status").write_text("\n\n".join(status) + "\n")
        for name in DEPENDENCIES:
            (root / f"var/lib/dpkg/info/{name}.list").write_text("\n".join(owned) + "\n")
        root.joinpath("etc").mkdir(exist_ok=True)
        for name in ACCOUNT_FILES:
            for suffix in ("", "-"):  # shadow's tools keep a backup beside each file
                shutil.copy2(f"/etc/{name}", root / f"etc/{name}{suffix}")
        yield root
    finally:
        remove_tree(base)


def agent_ids(root: Path) -> tuple[int, int] | None:
    for line in (root / "etc/passwd").read_text().splitlines():
        fields = line.split(":")
        if fields[0] == "helpline-agent":
            return int(fields[2]), int(fields[3])
    return None


def need_matching_python() -> None:
    """The installed launcher runs /usr/bin/python3, which must match the bundle."""
    python = Path("/usr/bin/python3")
    if not python.exists():
        pytest.skip("no /usr/bin/python3 to run the installed agent (the .deb depends on it)")
    version = run([str(python), "-c", "import sys; print(*sys.version_info[:2], sep='.')"])
    wanted = f"{sys.version_info.major}.{sys.version_info.minor}"
    if version.stdout.strip() != wanted:
        pytest.skip(f"the .deb targets Python {wanted}; /usr/bin/python3 is {version.stdout}")


def installed_env(root: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HELPLINE_AGENT_")}
    return {
        **env,
        "HELPLINE_AGENT_HOME": str(root / STATE),
        "HELPLINE_AGENT_CONFIG": str(root / CONFIG),
        "HELPLINE_BACKOFF_MAX": "1",
    }


def join_installed(
    root: Path, controller: Controller, processes: Processes, log: Path
) -> tuple[subprocess.Popen[str], dict[str, Any]]:
    """``sudo helpline-agent join CODE --yes`` from the installed files."""
    ticket = controller.open_ticket()
    code = controller.issue_code(ticket)
    agent = processes.start([str(root / LAUNCHER), "join", code, "--yes"], log, installed_env(root))
    session = controller.connected_session(ticket)
    return agent, session


def leave_installed(root: Path, agent: subprocess.Popen[str]) -> None:
    left = run([str(root / LAUNCHER), "leave"], env=installed_env(root))
    assert left.returncode == 0, left.stdout + left.stderr
    assert agent.wait(scaled(15)) == 0


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# -- the package itself -------------------------------------------------------------------


def test_the_deb_declares_its_needs_and_ships_root_owned_files(
    debs: list[dict[str, Any]], tmp_path: Path
) -> None:
    deb = debs[0]["path"]
    fields = run(["dpkg-deb", "-f", deb, "Package", "Version", "Architecture", "Depends"]).stdout
    minor = sys.version_info.minor
    assert "Package: helpline-agent" in fields
    assert "Version: 0.1.0-1" in fields
    assert f"python3 (>= 3.{minor}~), python3 (<< 3.{minor + 1})" in fields

    entries = {}
    for line in run(["dpkg-deb", "-c", deb]).stdout.splitlines():
        mode, owner, _size, _date, _time, name, *rest = line.split()
        entries[name.removeprefix("./").rstrip("/")] = (mode, owner, rest)
    assert {owner for _, owner, _ in entries.values()} == {"root/root"}
    assert entries[LAUNCHER][0] == "-rwxr-xr-x"
    assert entries["usr/bin/helpline-agent"][2] == ["->", "../lib/helpline-agent/helpline-agent"]
    for name in (CONFIG, UNIT, ROOT_SOCKET_UNIT, ROOT_SERVICE_UNIT):
        assert entries[name][0] == "-rw-r--r--", name
    executables = {n for n, (mode, _, _) in entries.items() if mode[0] == "-" and "x" in mode}
    assert executables == {LAUNCHER, ROOT_LAUNCHER}
    assert not any(n.startswith(("var/", "usr/lib/helpline-agent/lib/controller")) for n in entries)
    assert any(n.endswith(f".cpython-3{minor}.pyc") for n in entries)  # shipped compiled

    control = tmp_path / "control"
    run(["dpkg-deb", "-e", deb, str(control)])
    assert (control / "conffiles").read_text() == f"/{CONFIG}\n"
    for script in ("preinst", "postinst", "prerm", "postrm"):
        assert (control / script).stat().st_mode & 0o111, script
        syntax = run(["sh", "-n", str(control / script)])
        assert syntax.returncode == 0, syntax.stderr


def test_the_unit_is_hardened_and_passes_systemd_analyze_verify(
    debs: list[dict[str, Any]], public_tmp: Path
) -> None:
    analyze = need_tool("systemd-analyze", "verifies the unit")
    unpacked = public_tmp / "x"
    run(["dpkg-deb", "-x", debs[0]["path"], str(unpacked)])
    unit = (unpacked / UNIT).read_text()
    for directive in (
        "User=helpline-agent",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "CapabilityBoundingSet=\n",
        "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK",
        "Restart=on-failure",
        "RestartSec=",
        "KillSignal=SIGHUP",
        "StateDirectoryMode=0700",
    ):
        assert directive in unit, directive
    # verify needs ExecStart to exist: point it at the unpacked launcher, nothing else changes
    for name in (UNIT, ROOT_SOCKET_UNIT, ROOT_SERVICE_UNIT):
        text = (unpacked / name).read_text()
        (public_tmp / Path(name).name).write_text(
            text.replace("ExecStart=/", f"ExecStart={unpacked}/")
        )
    # the template as systemd instantiates it for one connection on the socket
    shutil.copyfile(
        public_tmp / "helpline-agent-root@.service", public_tmp / "helpline-agent-root@1.service"
    )
    for name in (
        "helpline-agent.service",
        "helpline-agent-root.socket",
        "helpline-agent-root@1.service",
    ):
        result = run([analyze, "verify", str(public_tmp / name)])
        assert result.returncode == 0, result.stdout + result.stderr
        assert result.stdout + result.stderr == "", name


def test_the_root_helper_units_let_only_the_agent_in(
    debs: list[dict[str, Any]], public_tmp: Path
) -> None:
    unpacked = public_tmp / "x"
    run(["dpkg-deb", "-x", debs[0]["path"], str(unpacked)])
    socket_unit = (unpacked / ROOT_SOCKET_UNIT).read_text()
    for directive in (
        "ListenStream=/run/helpline-agent-root.sock",
        "SocketUser=root",
        "SocketGroup=helpline-agent",
        "SocketMode=0660",
        "Accept=yes",
        "WantedBy=sockets.target",
    ):
        assert directive in socket_unit, directive
    service = (unpacked / ROOT_SERVICE_UNIT).read_text()
    for directive in (
        "--allow-user helpline-agent",
        "StandardInput=socket",
        "NoNewPrivileges=yes",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "SystemCallFilter=@system-service",
    ):
        assert directive in service, directive
    config = tomllib.loads((unpacked / CONFIG).read_text())
    assert config["root_helper"] == "/run/helpline-agent-root.sock"


# -- installing it ------------------------------------------------------------------------


def test_install_join_upgrade_remove_purge_in_a_throwaway_root(
    debs: list[dict[str, Any]],
    fake_root: Path,
    controller: Controller,
    processes: Processes,
    tmp_path: Path,
) -> None:
    need_matching_python()
    root = fake_root
    pristine = listing(root)
    accounts = {name: (root / "etc" / name).read_text() for name in ACCOUNT_FILES}

    installed = dpkg(root, "-i", debs[0]["path"])
    assert installed.returncode == 0, installed.stdout + installed.stderr

    ids = agent_ids(root)
    assert ids is not None
    uid, gid = ids
    assert 0 < uid < 1000  # a system account
    passwd = next(x for x in (root / "etc/passwd").read_text().splitlines() if x.startswith("help"))
    assert passwd.endswith(":/var/lib/helpline-agent:/usr/sbin/nologin")
    state = (root / STATE).stat()
    assert (stat.S_IMODE(state.st_mode), state.st_uid, state.st_gid) == (0o700, uid, gid)
    assert (root / ENABLED).is_symlink()
    assert os.readlink(root / ENABLED) == f"/{UNIT}"
    assert os.readlink(root / SOCKET_ENABLED) == f"/{ROOT_SOCKET_UNIT}"
    assert (root / CONFIG).read_text().startswith("# helpline agent config")
    code_files = listing(root / "usr/lib/helpline-agent")

    # the installed agent, started as root, runs as the agent user and joins
    agent, first = join_installed(root, controller, processes, tmp_path / "a1.log")
    assert os.stat(f"/proc/{agent.pid}").st_uid == uid
    key = root / STATE / "agent.key"
    key_stat = key.stat()
    assert (stat.S_IMODE(key_stat.st_mode), key_stat.st_uid) == (0o600, uid)
    identity = sha256(key)
    leave_installed(root, agent)
    assert listing(root / "usr/lib/helpline-agent") == code_files  # no bytecode written

    # an upgrade keeps the identity: same key file, same agent on the controller
    upgraded = dpkg(root, "-i", debs[1]["path"])
    assert upgraded.returncode == 0, upgraded.stdout + upgraded.stderr
    assert "Version: 0.1.0-2" in dpkg(root, "-s", "helpline-agent").stdout
    assert sha256(key) == identity
    agent, second = join_installed(root, controller, processes, tmp_path / "a2.log")
    assert second["agent"] == first["agent"]
    leave_installed(root, agent)

    # remove keeps config and identity (and masks the unit); purge leaves nothing
    removed = dpkg(root, "-r", "helpline-agent")
    assert removed.returncode == 0, removed.stdout + removed.stderr
    assert not (root / LAUNCHER).exists()
    assert sha256(key) == identity and (root / CONFIG).exists()
    assert os.readlink(root / "etc/systemd/system/helpline-agent.service") == "/dev/null"
    purged = dpkg(root, "-P", "helpline-agent")
    assert purged.returncode == 0, purged.stdout + purged.stderr
    assert listing(root) == pristine
    assert {name: (root / "etc" / name).read_text() for name in ACCOUNT_FILES} == accounts


def test_the_installed_agent_refuses_other_users_unsafe_state_and_a_wrong_pin(
    debs: list[dict[str, Any]],
    fake_root: Path,
    controller: Controller,
) -> None:
    need_matching_python()
    setpriv = need_tool("setpriv", "runs a step as an unprivileged user")
    root = fake_root
    assert dpkg(root, "-i", debs[0]["path"]).returncode == 0
    launcher, env, state = str(root / LAUNCHER), installed_env(root), root / STATE
    code = controller.issue_code(controller.open_ticket())

    as_nobody = [setpriv, "--reuid=65534", "--regid=65534", "--clear-groups"]
    nobody = run([*as_nobody, launcher, "status"], env=env)
    assert nobody.returncode == 2
    assert "run it with sudo: sudo helpline-agent status" in nobody.stderr, nobody.stderr

    state.chmod(0o755)
    loose = run([launcher, "join", code, "--yes"], env=env)
    assert loose.returncode == 2, loose.stdout + loose.stderr
    assert f"chmod 700 {state}" in loose.stderr
    state.chmod(0o700)

    os.chown(state, 0, 0)
    rooted = run([launcher, "join", code, "--yes"], env=env)
    assert rooted.returncode == 2
    assert "the agent must not run as root" in rooted.stderr, rooted.stderr
    uid, gid = agent_ids(root) or (0, 0)
    os.chown(state, uid, gid)

    config = root / CONFIG
    text = config.read_text()
    config.write_text(text.replace(tomllib.loads(text)["pin"], "ab" * 32))
    wrong = run([launcher, "join", code, "--yes"], env=env)
    assert wrong.returncode == 5, wrong.stdout + wrong.stderr
    assert "does not match the pinned fingerprint" in wrong.stdout
    assert not (state / "session.json").exists()

    assert dpkg(root, "-P", "helpline-agent").returncode == 0


def test_installing_without_root_is_refused(debs: list[dict[str, Any]], public_tmp: Path) -> None:
    need_root("to run the install step as an unprivileged user")
    need_tool("dpkg", "installs the .deb")
    setpriv = need_tool("setpriv", "runs a step as an unprivileged user")
    deb = public_tmp / Path(debs[0]["path"]).name
    shutil.copyfile(debs[0]["path"], deb)
    deb.chmod(0o644)
    as_nobody = [setpriv, "--reuid=65534", "--regid=65534", "--clear-groups"]
    env = {"PATH": PATH, "HOME": str(public_tmp)}

    plain = run([*as_nobody, "dpkg", "-i", str(deb)], env=env)
    assert plain.returncode != 0
    assert "requires superuser privilege" in plain.stderr, plain.stderr

    # forcing dpkg past its own check reaches the package's preinst, which refuses too
    root = public_tmp / "root"
    for directory in ("var/lib/dpkg/info", "var/lib/dpkg/updates", "var/log"):
        (root / directory).mkdir(parents=True)
    (root / "var/lib/dpkg/status").touch()
    for path in (root, *root.rglob("*")):
        os.chown(path, 65534, 65534)
    forced = run(
        [
            *as_nobody,
            "dpkg",
            "--force-not-root",
            "--force-depends",
            f"--root={root}",
            "--force-script-chrootless",
            f"--log={root}/var/log/dpkg.log",
            "-i",
            str(deb),
        ],
        env=env,
    )
    assert forced.returncode != 0
    assert "helpline-agent: installing needs root; run it with sudo" in forced.stderr
    assert not (root / "usr").exists()


# -- fixes that need root -----------------------------------------------------------------


def _wait_for(path: Path, helper: subprocess.Popen[str], log: Path) -> None:
    for _ in range(200):  # bounded: 20 s
        if path.exists():
            return
        assert helper.poll() is None, log.read_text()
        time.sleep(0.1)
    pytest.fail(f"the root helper never listened: {log.read_text()}")


def test_a_fix_that_needs_root_runs_through_the_installed_root_helper(
    debs: list[dict[str, Any]],
    fake_root: Path,
    controller: Controller,
    processes: Processes,
    public_tmp: Path,
    tmp_path: Path,
) -> None:
    """The installed agent runs as its own user; the installed root helper runs as root,
    listening as its socket unit would, and runs the signed fix for it and nobody else."""
    need_matching_python()
    setpriv = need_tool("setpriv", "runs a step as an unprivileged user")
    root = fake_root
    assert dpkg(root, "-i", debs[0]["path"]).returncode == 0
    uid, gid = agent_ids(root) or (0, 0)

    # a catalogue with one fix that needs root, signed and published on the controller
    (tmp_path / "catalogue/test.whoami").mkdir(parents=True)
    (tmp_path / "catalogue/test.whoami/fix.toml").write_text(WHOAMI_FIX)
    key, signed = tmp_path / "fixkey", tmp_path / "bundle.json"
    controller.json("fixes", "keygen", "--out", str(key))
    controller.json(
        "fixes", "sign", str(tmp_path / "catalogue"), "--key", str(key), "--out", str(signed)
    )
    controller.json("fixes", "publish", str(signed), "--replace-key")
    controller.cli("agent-config", "--out", str(tmp_path / "agent.toml"))
    fix_key = tomllib.loads((tmp_path / "agent.toml").read_text())["fix_key"]
    # the admin's edit of the conffile: the key, and the helper's socket in a test directory
    sock = public_tmp / "root.sock"
    config = root / CONFIG
    text = config.read_text()
    assert 'root_helper = "/run/helpline-agent-root.sock"' in text
    config.write_text(
        text.replace("/run/helpline-agent-root.sock", str(sock)) + f'fix_key = "{fix_key}"\n'
    )

    helper_log = tmp_path / "helper.log"
    helper = processes.start(
        [
            str(root / ROOT_LAUNCHER),
            "--config",
            str(config),
            "--allow-user",
            str(uid),
            "--socket-group",
            str(gid),
            "--state",
            str(tmp_path / "helper-state"),
            "--listen",
            str(sock),
        ],
        helper_log,
        {"PATH": PATH},
    )
    _wait_for(sock, helper, helper_log)
    st = sock.stat()
    assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (0o660, 0, gid)
    # anyone but the agent's user and group is kept out by the socket's mode
    knock = "import socket, sys; socket.socket(socket.AF_UNIX).connect(sys.argv[1])"
    as_nobody = [setpriv, "--reuid=65534", "--regid=65534", "--clear-groups"]
    nobody = run([*as_nobody, "/usr/bin/python3", "-c", knock, str(sock)])
    assert nobody.returncode != 0
    assert "PermissionError" in nobody.stderr

    tech = _login(controller, tmp_path, "rosa", "L3")
    ticket = controller.open_ticket()
    join = ["join", controller.issue_code(ticket), "--yes", "--allow", "test.whoami"]
    agent = processes.start(
        [str(root / LAUNCHER), *join],
        tmp_path / "agent.log",
        installed_env(root),
    )
    controller.connected_session(ticket)
    assert os.stat(f"/proc/{agent.pid}").st_uid == uid

    ran = controller.cli("fix", ticket, "test.whoami", "--json", check=False, env=tech)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    result = json.loads(ran.stdout)
    assert result["status"] == "succeeded"
    assert result["stdout"].strip() == "euid 0"  # the agent is uid {uid}; the fix ran as root
    assert result["privileged"] == "root helper"
    assert result["consent"] == "preapproved"
    assert "running test.whoami" in helper_log.read_text()
    assert f"uid {uid}" in helper_log.read_text()

    # without the helper, the fix is refused, said so, and audited
    helper.terminate()
    helper.wait(scaled(10))
    sock.unlink(missing_ok=True)
    refused = controller.cli("fix", ticket, "test.whoami", "--json", check=False, env=tech)
    assert refused.returncode == 4, refused.stdout + refused.stderr
    assert json.loads(refused.stdout)["code"] == "root_helper_unavailable"
    audited = controller.json("audit", "log", "--type", "fix.refused", "--ticket", ticket)
    assert audited[-1]["details"]["code"] == "root_helper_unavailable"

    leave_installed(root, agent)
    assert dpkg(root, "-P", "helpline-agent").returncode == 0
