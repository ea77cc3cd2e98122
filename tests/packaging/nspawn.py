"""A throwaway Debian system booted under real systemd, for the packaging tests.

The machine running the tests need not run systemd itself: ``systemd-nspawn --boot``
starts the container's own systemd as its PID 1. The base tree (Debian 12, minbase plus
systemd, dbus and python3) is made once with debootstrap and cached in
``HELPLINE_TEST_ROOTS`` (default ``/var/cache/helpline-tests``); every boot runs on a
tmpfs overlay (``--volatile=overlay``), so nothing a test does outlives its container.

The container shares the host's network namespace, so an agent inside reaches a
controller listening on the host's 127.0.0.1, and nothing else changes on the host.
Without a systemd on the host there is no machined and no cgroup manager: each container
gets its own cgroup subtree (made and removed here), and commands enter it with
``nsenter``.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Final

SUITE: Final = "bookworm"
MIRROR: Final = "http://deb.debian.org/debian"
PACKAGES: Final = ("systemd", "systemd-sysv", "dbus", "python3")
ROOTS_ENV: Final = "HELPLINE_TEST_ROOTS"
PATH: Final = "/usr/sbin:/usr/bin:/sbin:/bin"
CGROUP_TREES: Final = ("systemd", "unified")


class ContainerError(Exception):
    """The container could not be made or booted; the message says why."""


def base_root() -> Path:
    """The cached Debian tree, made with debootstrap on first use (a few minutes)."""
    cache = Path(os.environ.get(ROOTS_ENV, "/var/cache/helpline-tests"))
    name = f"debian-{SUITE}-" + "-".join(p.replace("-", "") for p in PACKAGES)
    root = cache / name
    cache.mkdir(parents=True, exist_ok=True)
    # parallel test workers (and runs) share the cache: one makes the tree, the others wait
    with open(cache / f"{name}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if not _complete(root):
                _debootstrap(cache, name, root)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    return root


def _complete(root: Path) -> bool:
    return (root / "usr/bin/python3").exists() and (root / "lib/systemd/systemd").exists()


def _debootstrap(cache: Path, name: str, root: Path) -> None:
    scratch = Path(tempfile.mkdtemp(prefix=f"{name}.", dir=cache))
    try:
        made = subprocess.run(
            [
                "debootstrap",
                "--variant=minbase",
                f"--include={','.join(PACKAGES)}",
                SUITE,
                str(scratch),
                MIRROR,
            ],
            capture_output=True,
            text=True,
            timeout=1200,
            stdin=subprocess.DEVNULL,
        )
        if made.returncode != 0:
            raise ContainerError(f"debootstrap failed: {(made.stdout + made.stderr)[-2000:]}")
        # a machine id is made at first boot; an empty one keeps every boot a first boot
        (scratch / "etc/machine-id").write_text("")
        scratch.chmod(0o755)
        with contextlib.suppress(FileExistsError, OSError):
            scratch.rename(root)  # a run without the lock (an older one) may have won
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


class Container:
    """One booted container; use as a context manager, which powers it off and cleans up."""

    def __init__(self, root: Path, log: Path, *, binds: dict[Path, str] | None = None) -> None:
        self.root = root
        self.log = log
        self.binds = binds or {}
        self.name = f"helpline-test-{os.getpid()}-{time.monotonic_ns() % 100000}"
        self.nspawn: subprocess.Popen[bytes] | None = None
        self.leader: int | None = None
        self.cgroups = [
            Path("/sys/fs/cgroup") / tree / self.name
            for tree in CGROUP_TREES
            if Path("/sys/fs/cgroup", tree).is_dir()
        ]

    def __enter__(self) -> Container:
        try:
            self._boot()
        except BaseException:
            self._power_off()
            raise
        return self

    def __exit__(self, *_exc: object) -> None:
        self._power_off()

    # -- running things inside -------------------------------------------------------------

    def command(self, *argv: str) -> list[str]:
        """argv that runs ``argv`` inside the container, as root, with a clean environment."""
        assert self.leader is not None
        return [
            "nsenter",
            "-t",
            str(self.leader),
            "-a",
            "--",
            "/usr/bin/env",
            "-i",
            f"PATH={PATH}",
            "LANG=C.UTF-8",
            "SYSTEMD_PAGER=",
            "SYSTEMD_COLORS=0",
            *argv,
        ]

    def run(self, *argv: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """Run to completion inside; never raises on a non-zero status."""
        return subprocess.run(
            self.command(*argv),
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )

    def path(self, inside: str) -> Path:
        """A path inside the running container, as the host sees it."""
        return Path(f"/proc/{self.leader}/root") / inside.lstrip("/")

    def wait_for(self, *argv: str, expect: str, within: float = 30) -> str:
        """Run ``argv`` until its output contains ``expect`` (bounded); the last output."""
        deadline = time.monotonic() + within
        output = ""
        while time.monotonic() < deadline:
            result = self.run(*argv)
            output = result.stdout + result.stderr
            if expect in output:
                return output
            time.sleep(0.2)
        raise AssertionError(f"{' '.join(argv)} never said {expect!r}; last: {output}")

    # -- boot and power-off ----------------------------------------------------------------

    def _boot(self, within: float = 120) -> None:
        for cgroup in self.cgroups:
            cgroup.mkdir()
        procs = [str(c / "cgroup.procs") for c in self.cgroups]

        def into_own_cgroup() -> None:
            # nspawn expects to be the only thing in its cgroup, as under a real manager
            for path in procs:
                with open(path, "w") as handle:
                    handle.write(str(os.getpid()))

        args = [
            "systemd-nspawn",
            "--quiet",
            f"--directory={self.root}",
            "--volatile=overlay",
            "--boot",
            "--register=no",
            "--keep-unit",
            f"--machine={self.name}",
            "--console=read-only",
            *(f"--bind-ro={host}:{inside}" for host, inside in self.binds.items()),
        ]
        with open(self.log, "ab") as log:
            self.nspawn = subprocess.Popen(
                args,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=into_own_cgroup,
            )
        deadline = time.monotonic() + within
        state = ""
        while time.monotonic() < deadline:
            if self.nspawn.poll() is not None:
                raise ContainerError(f"systemd-nspawn exited: {self._log_tail()}")
            if self.leader is None:
                self.leader = self._child(self.nspawn.pid)
            if self.leader is not None:
                state = self.run("systemctl", "is-system-running", timeout=30).stdout.strip()
                if state in ("running", "degraded"):
                    return
            time.sleep(0.2)
        raise ContainerError(f"systemd did not come up (state {state!r}): {self._log_tail()}")

    def _power_off(self, within: float = 60) -> None:
        if self.nspawn is not None and self.nspawn.poll() is None:
            if self.leader is not None:
                self.run("systemctl", "poweroff", "--no-block", timeout=30)
            else:
                self.nspawn.terminate()
            try:
                self.nspawn.wait(within)
            except subprocess.TimeoutExpired:
                # killing the container's PID 1 ends its whole PID namespace
                if self.leader is not None:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(self.leader, signal.SIGKILL)
                self.nspawn.kill()
                self.nspawn.wait(30)
        for cgroup in self.cgroups:
            # nspawn leaves its payload/supervisor subgroups behind, empty
            for directory in sorted(cgroup.glob("**/"), key=lambda p: -len(p.parts)):
                with contextlib.suppress(OSError):
                    directory.rmdir()

    @staticmethod
    def _child(pid: int) -> int | None:
        try:
            children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        except OSError:
            return None
        return int(children[0]) if children else None

    def _log_tail(self) -> str:
        try:
            return self.log.read_text(errors="replace")[-3000:]
        except OSError:
            return "(no console log)"


@contextlib.contextmanager
def booted(root: Path, log: Path, *, binds: dict[Path, str] | None = None) -> Iterator[Container]:
    """Boot a container on ``root`` and power it off afterwards."""
    with Container(root, log, binds=binds) as container:
        yield container
