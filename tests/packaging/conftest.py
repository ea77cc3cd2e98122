"""Built artefacts and a live controller, shared by the packaging tests of one module.

Building takes seconds (the .deb: compiling and xz), so the controller and the artefacts
built for it live as long as a test module, not a test: each test opens its own ticket
and code. The controller is the e2e suite's :class:`~tests.e2e.conftest.Controller`, a
real ``helpline serve`` process over TLS on 127.0.0.1; the artefacts are built by the real
``helpline package`` command against its home.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import scaled
from tests.e2e.conftest import Controller, free_port
from tests.services import REQUIRE_ENV, services_required

DEBIAN = Path("/etc/debian_version").exists()
#: a catalogue fix that needs root and shows whom it ran as (signed by the tests' key)
WHOAMI_FIX = """\
id = "test.whoami"
title = "Who runs fixes"
description = "Prints the user a fix that needs root runs as."
command = ["{python}", "-c", "import os; print('euid', os.geteuid())"]
timeout = 30
needs_root = true
"""


def need_tool(name: str, why: str, *, required_here: bool = DEBIAN) -> str:
    """The tool's path; else skip, or fail under HELPLINE_REQUIRE_SERVICES=1 if this
    machine (Debian-family, by default) is one where it must be present."""
    path = shutil.which(name)
    if path is not None:
        return path
    message = f"{name} is not installed ({why})"
    if required_here and services_required():
        pytest.fail(f"{message}, and {REQUIRE_ENV}=1 is set", pytrace=False)
    pytest.skip(message)


def need_root(why: str) -> None:
    """Skip (never fail: CI may run unprivileged) unless running as root."""
    if os.name != "posix" or os.geteuid() != 0:
        pytest.skip(f"needs root ({why})")


@dataclass
class Processes:
    """Processes a test started; killed at teardown if still running."""

    started: list[subprocess.Popen[str]] = field(default_factory=list)

    def start(self, args: list[str], log: Path, env: dict[str, str]) -> subprocess.Popen[str]:
        handle = open(log, "a")  # noqa: SIM115 - lives with the process
        process = subprocess.Popen(
            args, stdout=handle, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env
        )
        self.started.append(process)
        return process

    def stop_all(self) -> None:
        for process in self.started:
            if process.poll() is None:
                process.kill()
                process.wait(scaled(10))


@pytest.fixture
def processes() -> Iterator[Processes]:
    tracked = Processes()
    try:
        yield tracked
    finally:
        tracked.stop_all()


@pytest.fixture(scope="module")
def controller(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Controller]:
    """One running controller for the module (as tests/e2e's make_controller starts them)."""
    base = tmp_path_factory.mktemp("controller")
    home = base / "controller"
    port = free_port()
    env = {
        **os.environ,
        "HELPLINE_HOME": str(home),
        "HELPLINE_BACKOFF_BASE": "0.1",
        "HELPLINE_BACKOFF_MAX": "1",
        "HELPLINE_CLIENT_CONFIG": str(base / "client.toml"),
    }
    env.pop("HELPLINE_DB", None)
    node = Controller(home=home, port=port, tmp=base, env=env)
    node.cli("init", "--url", node.url, "--home", str(home))
    node.start()
    try:
        yield node
    finally:
        node.stop()


def package(controller: Controller, kind: str, out: Path, *extra: str) -> dict[str, Any]:
    """Run ``helpline package KIND --out OUT --json`` against the controller's home."""
    # compiling and xz take a while, longer still beside another test worker
    data: dict[str, Any] = controller.json("package", kind, "--out", str(out), *extra, timeout=300)
    return data


@pytest.fixture(scope="module")
def pyz(controller: Controller, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The single-file agent built for ``controller``: the command's JSON report."""
    return package(controller, "agent", tmp_path_factory.mktemp("pyz"))


def public_dir(prefix: str) -> Path:
    """A fresh directory everyone may traverse (agents run as other users read from it).

    pytest's own temporary directories are private to root, so these live in the system
    temporary directory and are removed by :func:`remove_tree`.
    """
    path = Path(tempfile.mkdtemp(prefix=prefix))
    path.chmod(0o755)
    return path


def remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def public_tmp() -> Iterator[Path]:
    path = public_dir("helpline-pkg-")
    try:
        yield path
    finally:
        remove_tree(path)


def run(
    args: list[str],
    *,
    env: dict[str, str] | None = None,
    timeout: float = 60,
    cwd: Path | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run to completion, capturing text output; never raises on a non-zero status."""
    return subprocess.run(
        args,
        capture_output=True,
        text=True,
        env=env,
        timeout=scaled(timeout),
        stdin=subprocess.DEVNULL,
        cwd=cwd,
    )
