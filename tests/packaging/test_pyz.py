"""The single-file agent, built by ``helpline package agent`` and run as a customer would.

Every run uses ``python -S`` unless the test is about the plain command: without site
packages the interpreter has nothing but the standard library and the bundle, so a
dependency the bundle forgot fails here instead of being borrowed from the test venv.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import scaled
from tests.e2e.conftest import Controller, wait_until
from tests.packaging.conftest import Processes, need_root, need_tool, run

pytestmark = pytest.mark.e2e

PAYLOAD = "lib/"
MANIFEST = "helpline-agent.manifest.json"
#: Must never be inside the agent: the controller and its libraries.
CONTROLLER_SIDE = {"controller", "asyncssh", "sqlalchemy", "alembic", "aiosqlite", "asyncpg"}


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One unpack cache for the runs of a good file (unpacking is what the first run does)."""
    return tmp_path_factory.mktemp("cache")


def agent_env(cache: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HELPLINE_AGENT_")}
    return {**env, "HELPLINE_AGENT_CACHE": str(cache), "HELPLINE_BACKOFF_MAX": "1"}


def pyz_args(path: Path | str, *args: str, python: str = sys.executable) -> list[str]:
    return [python, "-S", str(path), *args]


def agent_config_of(controller: Controller) -> dict[str, Any]:
    """What `helpline agent-config` writes for the controller (URL, pin, catalogue key)."""
    data = controller.json("agent-config", "--out", str(controller.tmp / "agent.toml"))
    return {key: value for key, value in data.items() if key != "path"}


# -- what it carries ------------------------------------------------------------------


def test_it_carries_the_agent_its_dependencies_and_the_controller_config_only(
    pyz: dict[str, Any], controller: Controller
) -> None:
    path = Path(pyz["path"])
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        manifest = json.loads(archive.read(MANIFEST))
        config = tomllib.loads(archive.read(PAYLOAD + "agent/bundled.toml").decode())

    payload = [n[len(PAYLOAD) :] for n in names if n.startswith(PAYLOAD)]
    assert set(names) - {PAYLOAD + n for n in payload} == {"__main__.py", MANIFEST}
    assert sorted(manifest["files"]) == sorted(payload)

    top = {name.split("/")[0] for name in payload}
    expected = {"agent", "protocol", "transport"}
    for dependency in pyz["dependencies"]:
        dist = importlib.metadata.distribution(dependency["name"])
        expected |= {str(f).split("/")[0] for f in dist.files or () if not str(f).startswith("..")}
    expected = {t for t in expected if t != "__pycache__"}
    assert top == expected
    plain = {t.split("-")[0].removesuffix(".py").lower() for t in top}
    assert not plain & (CONTROLLER_SIDE | {"rich", "pygments"})
    assert not any(n.endswith((".pyc", "RECORD")) or "__pycache__" in n for n in payload)
    assert "rich" in pyz["left_out"]

    assert config == agent_config_of(controller)
    assert config["url"] == controller.url
    # the footprint stays small: about 8.5 MB today, most of it cryptography's OpenSSL
    assert pyz["size"] < 15_000_000, pyz["size"]


def test_the_checksum_file_checks_with_sha256sum(pyz: dict[str, Any]) -> None:
    path = Path(pyz["path"])
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    assert pyz["sha256"] == digest
    assert Path(pyz["checksum_file"]).read_text() == f"{digest}  {path.name}\n"
    sha256sum = shutil.which("sha256sum")
    if sha256sum is not None:
        checked = run([sha256sum, "-c", path.name + ".sha256"], cwd=path.parent)
        assert checked.returncode == 0, checked.stdout + checked.stderr


# -- it works --------------------------------------------------------------------------


def test_it_joins_a_real_controller_with_its_built_in_config(
    pyz: dict[str, Any],
    controller: Controller,
    cache: Path,
    tmp_path: Path,
    processes: Processes,
) -> None:
    ticket = controller.open_ticket()
    code = controller.issue_code(ticket)
    home = tmp_path / "agent"
    log = tmp_path / "agent.log"
    agent = processes.start(
        pyz_args(pyz["path"], "join", code, "--yes", "--home", str(home)), log, agent_env(cache)
    )

    session = controller.connected_session(ticket)
    assert session["state"] == "live"
    pong = controller.json("ping", ticket)
    assert pong, pong
    assert (home / "agent.key").stat().st_mode & 0o777 == 0o600

    # `leave` reads the pid through the bundled psutil (a compiled extension): it loads
    left = run(pyz_args(pyz["path"], "leave", "--home", str(home)), env=agent_env(cache))
    assert left.returncode == 0, left.stdout + left.stderr
    assert agent.wait(scaled(15)) == 0, log.read_text()
    bundles = [p for p in cache.iterdir() if p.name.startswith("bundle-")]
    assert len(bundles) == 1
    assert bundles[0].stat().st_mode & 0o777 == 0o700


def test_it_runs_as_plain_python3_too(pyz: dict[str, Any], cache: Path, tmp_path: Path) -> None:
    status = run(
        [sys.executable, pyz["path"], "status", "--home", str(tmp_path / "a")],
        env=agent_env(cache),
    )
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout) == {"running_pid": None, "session": None, "outbox": 0}


def test_resume_keeps_trying_while_the_grant_lasts_and_sighup_keeps_the_session(
    pyz: dict[str, Any],
    controller: Controller,
    cache: Path,
    tmp_path: Path,
    processes: Processes,
) -> None:
    """The service's two needs: a stop that keeps the session, a resume that waits."""
    import signal

    ticket = controller.open_ticket()
    home = tmp_path / "agent"
    env = agent_env(cache)
    join = pyz_args(
        pyz["path"], "join", controller.issue_code(ticket), "--yes", "--home", str(home)
    )
    agent = processes.start(join, tmp_path / "join.log", env)
    controller.connected_session(ticket)

    agent.send_signal(signal.SIGHUP)  # what systemd sends on stop (KillSignal=SIGHUP)
    assert agent.wait(scaled(15)) == 0
    assert "session stays open" in (tmp_path / "join.log").read_text()
    saved = json.loads((home / "session.json").read_text())

    controller.stop()  # the controller is away when the agent comes back
    try:
        log = tmp_path / "resume.log"
        resumed = processes.start(pyz_args(pyz["path"], "resume", "--home", str(home)), log, env)
        wait_until(lambda: "reconnecting" in log.read_text(), 20, "a reconnect attempt")
        assert resumed.poll() is None, log.read_text()  # waiting, not giving up (exit 5)
    finally:
        controller.start()
    session = controller.connected_session(ticket)
    assert session["id"] == saved["session_id"]
    left = run(pyz_args(pyz["path"], "leave", "--home", str(home)), env=env)
    assert left.returncode == 0, left.stderr
    assert resumed.wait(scaled(15)) == 0


# -- bad input -------------------------------------------------------------------------


def _flip_entry_byte(path: Path, entry: str) -> None:
    """Invert one byte in the middle of ``entry``'s compressed data."""
    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo(entry)
    data = bytearray(path.read_bytes())
    header = info.header_offset  # zipfile already counts the shebang in front of the zip
    assert data[header : header + 4] == b"PK\x03\x04"
    name_len = int.from_bytes(data[header + 26 : header + 28], "little")
    extra_len = int.from_bytes(data[header + 28 : header + 30], "little")
    start = header + 30 + name_len + extra_len
    data[start + info.compress_size // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def _rewrite(path: Path, entry: str, content: bytes) -> None:
    """Replace ``entry`` with a valid (CRC-correct) entry holding ``content``."""
    with zipfile.ZipFile(path) as archive:
        items = [(info, archive.read(info)) for info in archive.infolist()]
    prefix = path.read_bytes().split(b"PK\x03\x04", 1)[0]
    with open(path, "wb") as raw:
        raw.write(prefix)
        with zipfile.ZipFile(raw, "w") as archive:
            for info, data in items:
                archive.writestr(info, content if info.filename == entry else data)


CORRUPTIONS = {
    "flipped byte, checksum file beside it": (
        lambda p: _flip_entry_byte(p, PAYLOAD + "agent/cli.py"),
        True,
        "says",
    ),
    "flipped byte, no checksum file": (
        lambda p: _flip_entry_byte(p, PAYLOAD + "agent/cli.py"),
        False,
        "damaged",
    ),
    "a file swapped inside": (
        lambda p: _rewrite(p, PAYLOAD + "agent/cli.py", b"print('pwned')\n"),
        False,
        "agent/cli.py does not match",
    ),
    "manifest edited": (
        lambda p: _rewrite(p, MANIFEST, b'{"format": 1, "files": {}}'),
        False,
        "its manifest does not match",
    ),
}


@pytest.mark.parametrize("case", sorted(CORRUPTIONS))
def test_a_corrupted_download_refuses_to_run(
    pyz: dict[str, Any], tmp_path: Path, case: str
) -> None:
    corrupt, keep_checksum, says = CORRUPTIONS[case]
    path = tmp_path / "helpline-agent.pyz"
    shutil.copyfile(pyz["path"], path)
    if keep_checksum:
        shutil.copyfile(pyz["checksum_file"], tmp_path / "helpline-agent.pyz.sha256")
    corrupt(path)
    cache, home = tmp_path / "cache", tmp_path / "agent"

    result = run(pyz_args(path, "join", "7KQ2M-9XD4R", "--home", str(home)), env=agent_env(cache))

    assert result.returncode == 2, result.stdout + result.stderr
    assert "refusing to run it" in result.stderr and says in result.stderr, result.stderr
    assert "sha256sum -c helpline-agent.pyz.sha256" in result.stderr
    assert not home.exists()  # no agent code ran
    assert not list(cache.glob("bundle-*")), "nothing may be left unpacked"


def test_a_truncated_download_fails_its_checksum_and_never_starts(
    pyz: dict[str, Any], tmp_path: Path
) -> None:
    path = tmp_path / "helpline-agent.pyz"
    path.write_bytes(Path(pyz["path"]).read_bytes()[: pyz["size"] // 2])
    shutil.copyfile(pyz["checksum_file"], tmp_path / "helpline-agent.pyz.sha256")
    sha256sum = need_tool("sha256sum", "checks downloads", required_here=False)
    checked = run([sha256sum, "-c", "helpline-agent.pyz.sha256"], cwd=tmp_path)
    assert checked.returncode != 0
    home = tmp_path / "agent"

    # The zip directory at the end is gone, so Python cannot even find the bootstrap: the
    # refusal is Python's own ("can't find '__main__'" or a SyntaxError), not ours.
    result = run(pyz_args(path, "join", "7KQ2M-9XD4R", "--home", str(home)), env=None)
    assert result.returncode != 0
    assert not home.exists()


def _other_python() -> str | None:
    """An interpreter of another minor version (on PATH, or installed by pyenv), if any."""
    mine = f"python{sys.version_info.major}.{sys.version_info.minor}"
    pyenv = Path(os.environ.get("PYENV_ROOT", "~/.pyenv")).expanduser() / "versions"
    candidates = [shutil.which(f"python3.{minor}") for minor in range(8, 16)]
    candidates += [
        str(p)
        for p in sorted(pyenv.glob("3.*/bin/python3.*"))
        if p.name[8:].isdigit() and int(p.name[8:]) >= 8  # the bootstrap parses on 3.8+
    ]
    for path in candidates:
        if path is None or Path(path).name == mine:
            continue
        probe = subprocess.run([path, "-c", "print(1)"], capture_output=True, timeout=30)
        if probe.returncode == 0:
            return path
    return None


def test_another_python_version_is_refused_with_what_to_do(
    pyz: dict[str, Any], tmp_path: Path
) -> None:
    other = _other_python()
    if other is None:
        pytest.skip("no Python of another minor version on PATH")
    home = tmp_path / "agent"
    result = run(
        pyz_args(pyz["path"], "join", "7KQ2M-9XD4R", "--home", str(home), python=other),
        env=agent_env(tmp_path / "cache"),
    )
    assert result.returncode == 2, result.stderr
    wanted = f"{sys.version_info.major}.{sys.version_info.minor}"
    assert f"built for Python {wanted}" in result.stderr
    assert f"Run it with python{wanted}" in result.stderr
    assert not home.exists()


def test_a_config_with_a_wrong_pin_stops_before_sending_anything(
    pyz: dict[str, Any],
    controller: Controller,
    cache: Path,
    tmp_path: Path,
    processes: Processes,
) -> None:
    ticket = controller.open_ticket()
    code = controller.issue_code(ticket)
    wrong = tmp_path / "wrong.toml"
    wrong.write_text(f'url = "{controller.url}"\npin = "{"ab" * 32}"\n')
    home = tmp_path / "agent"
    env = agent_env(cache)

    refused = run(
        pyz_args(pyz["path"], "join", code, "--yes", "--config", str(wrong), "--home", str(home)),
        env=env,
    )

    assert refused.returncode == 5, refused.stdout + refused.stderr
    assert "does not match the pinned fingerprint" in refused.stdout
    # nothing was sent: the code is still unused, and the built-in config joins with it
    log = tmp_path / "agent.log"
    processes.start(pyz_args(pyz["path"], "join", code, "--yes", "--home", str(home)), log, env)
    controller.connected_session(ticket)
    assert run(pyz_args(pyz["path"], "leave", "--home", str(home)), env=env).returncode == 0

    garbled = tmp_path / "garbled.toml"
    garbled.write_text(f'url = "{controller.url}"\npin = "not-a-pin"\n')
    bad = run(
        pyz_args(pyz["path"], "join", code, "--config", str(garbled), "--home", str(home)), env=env
    )
    assert bad.returncode == 2 and str(garbled) in bad.stderr, bad.stderr


@pytest.mark.parametrize("problem", ["mode 0755", "another owner"])
def test_an_unsafe_state_directory_is_refused_with_the_fix(
    pyz: dict[str, Any], cache: Path, tmp_path: Path, problem: str
) -> None:
    home = tmp_path / "agent"
    home.mkdir(mode=0o700)
    if problem == "mode 0755":
        home.chmod(0o755)
        fix = f"chmod 700 {home}"
    else:
        need_root("to give the directory to another user")
        os.chown(home, 65534, 65534)
        fix = f"chown -R 0 {home}"

    result = run(
        pyz_args(pyz["path"], "join", "7KQ2M-9XD4R", "--home", str(home)), env=agent_env(cache)
    )

    assert result.returncode == 2, result.stdout + result.stderr
    assert fix in result.stderr, result.stderr
    assert not (home / "agent.key").exists()


def test_the_build_refuses_an_agent_that_imports_what_it_does_not_carry(tmp_path: Path) -> None:
    from helpline_packaging.bundle import Bundle, Carried, Target, unresolved_imports

    module = tmp_path / "new.py"
    module.write_text("import json\nimport psutil\nfrom orjson import dumps\nfrom . import x\n")
    psutil_file = tmp_path / "psutil_init.py"
    psutil_file.touch()
    bundle = Bundle(
        ours=(Carried("agent", "0", (("agent/new.py", module),)),),
        dependencies=(Carried("psutil", "7", (("psutil/__init__.py", psutil_file),)),),
        target=Target.here(),
        version="0",
    )
    assert unresolved_imports(bundle) == [("agent/new.py", "orjson")]


def test_the_built_in_config_is_one_the_agent_reads(tmp_path: Path) -> None:
    from agent.config import AgentConfig
    from helpline_packaging import agent_config_text

    path = tmp_path / "agent.toml"
    key = "A" * 43  # the catalogue key's length (base64url of 32 bytes)
    path.write_text(agent_config_text("wss://h:1", "ab" * 32, fix_key=key, unattended=["x.y"]))
    loaded = AgentConfig.load(path)
    assert (loaded.url, loaded.pin, loaded.fix_key, loaded.unattended) == (
        "wss://h:1",
        "ab" * 32,
        key,
        ("x.y",),
    )
    path.write_text(agent_config_text("wss://h:1", "ab" * 32))
    assert AgentConfig.load(path).fix_key is None
