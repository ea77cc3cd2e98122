"""Shared plumbing for the benchmarks: real processes on loopback, and RESULTS.md.

Every benchmark starts a real controller (``python -m controller serve``) and a real agent
(``python -m agent join``) in a temporary directory on a free 127.0.0.1 port, exactly as a
technician and a customer would, and removes both (and the directory) when it ends, however
it ends. Every wait here is bounded in time; a whole benchmark is bounded by
:func:`install_deadline`.
"""

from __future__ import annotations

import json
import math
import os
import platform
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from types import FrameType
from typing import IO, Any, TypeVar

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
RESULTS = BENCH / "RESULTS.md"

T = TypeVar("T")

RESULTS_HEADER = """# Benchmark results

Written by the scripts in `bench/`; each script replaces only its own section (between its
`<!-- bench:NAME:start -->` and `<!-- bench:NAME:end -->` markers), so re-running one
benchmark never duplicates or disturbs another. Targets and floors are the ones in the
product brief ("Targets to measure against"). Everything runs on loopback (127.0.0.1) with
real processes and real TLS 1.3; nothing is mocked.
"""


class BenchError(Exception):
    """The system under test did not come up or answer as expected."""


# -- bounds -----------------------------------------------------------------------------


def install_deadline(seconds: int) -> None:
    """Abort the whole benchmark (cleanly, through ``finally`` blocks) after ``seconds``.

    SIGTERM and SIGALRM both become ``SystemExit`` in the main thread (which asyncio lets
    through, unlike ordinary exceptions raised inside a callback), so the context managers
    below still stop their processes and remove their directories.
    """

    def on_alarm(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(f"benchmark stopped: it exceeded its overall limit of {seconds} s")

    def on_term(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGALRM, on_alarm)
    signal.signal(signal.SIGTERM, on_term)
    signal.alarm(seconds)


def wait_until(predicate: Callable[[], T | None], seconds: float, what: str) -> T:
    """Poll ``predicate`` until it returns something truthy; bounded in time."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise BenchError(f"timed out after {seconds:g} s waiting for {what}")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


def stop_process(process: subprocess.Popen[Any], grace: float = 10.0) -> None:
    """SIGTERM, wait ``grace`` seconds, then SIGKILL: only this one process, by its id."""
    if process.poll() is not None:
        return
    with suppress(ProcessLookupError):
        process.send_signal(signal.SIGTERM)
    try:
        process.wait(grace)
    except subprocess.TimeoutExpired:
        with suppress(ProcessLookupError):
            process.kill()
        process.wait(5)


@contextmanager
def temp_dir(prefix: str) -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


# -- the system under test ------------------------------------------------------------


@dataclass
class Stack:
    """A running controller and one agent joined to ticket ``ticket``."""

    tmp: Path
    port: int
    env: dict[str, str]
    ticket: str = ""
    controller: subprocess.Popen[bytes] | None = None
    agent: subprocess.Popen[bytes] | None = None
    logs: list[IO[bytes]] = field(default_factory=list)

    @property
    def home(self) -> Path:
        return self.tmp / "controller"

    @property
    def url(self) -> str:
        return f"wss://127.0.0.1:{self.port}"

    def cli(self, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        """Run the real technician CLI (``python -m controller ...``) against this stack."""
        result = subprocess.run(
            [sys.executable, "-m", "controller", *args],
            env=self.env,
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if result.returncode != 0:
            raise BenchError(
                f"helpline {' '.join(args)} exited {result.returncode}\n"
                f"stdout: {result.stdout}\nstderr: {result.stderr}"
            )
        return result

    def json(self, *args: str, timeout: float = 60.0) -> Any:
        return json.loads(self.cli(*args, "--json", timeout=timeout).stdout)

    def log_tail(self, name: str, lines: int = 20) -> str:
        path = self.tmp / f"{name}.log"
        if not path.exists():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    def _spawn(self, name: str, argv: Sequence[str]) -> subprocess.Popen[bytes]:
        log = open(self.tmp / f"{name}.log", "ab")  # noqa: SIM115 - closed in running_stack
        self.logs.append(log)
        return subprocess.Popen(
            list(argv),
            env=self.env,
            cwd=REPO,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )

    def start_controller(self) -> None:
        self.controller = self._spawn(
            "controller", [sys.executable, "-m", "controller", "serve", "--home", str(self.home)]
        )
        process = self.controller

        def listening() -> bool:
            if process.poll() is not None:
                raise BenchError(f"controller exited:\n{self.log_tail('controller')}")
            return port_open(self.port)

        wait_until(listening, 30, "the controller to listen")

    def join_agent(self) -> None:
        config = self.tmp / "agent.toml"
        self.cli("agent-config", "--out", str(config))
        self.ticket = str(
            self.json("ticket", "open", "--title", "bench", "--customer", "bench")["id"]
        )
        code = str(self.json("code", self.ticket)["code"])
        self.agent = self._spawn(
            "agent",
            [
                sys.executable,
                "-m",
                "agent",
                "join",
                code,
                "--config",
                str(config),
                "--home",
                str(self.tmp / "agent-home"),
                "--yes",
            ],
        )
        agent = self.agent

        def connected() -> bool:
            if agent.poll() is not None:
                raise BenchError(f"agent exited:\n{self.log_tail('agent')}")
            return any(s["ticket"] == self.ticket and s["connected"] for s in self.json("sessions"))

        wait_until(connected, 30, f"the agent to connect to {self.ticket}")


@contextmanager
def running_stack() -> Iterator[Stack]:
    """``init`` + ``serve`` + ``agent-config`` + ticket + code + ``agent join``; torn down after."""
    with temp_dir("helpline-bench-") as tmp:
        port = free_port()
        env = {
            **os.environ,
            "HELPLINE_HOME": str(tmp / "controller"),
            "HELPLINE_CLIENT_CONFIG": str(tmp / "client.toml"),
        }
        env.pop("HELPLINE_DB", None)
        stack = Stack(tmp=tmp, port=port, env=env)
        try:
            stack.cli("init", "--url", stack.url, "--home", str(stack.home))
            stack.start_controller()
            stack.join_agent()
            yield stack
        finally:
            for process in (stack.agent, stack.controller):
                if process is not None:
                    stop_process(process)
            for log in stack.logs:
                log.close()


# -- figures --------------------------------------------------------------------------


def percentile(ordered: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of an already sorted, non-empty sequence."""
    rank = max(1, math.ceil(q * len(ordered)))
    return ordered[rank - 1]


def verdict(met: bool) -> str:
    return "met" if met else "**missed**"


# -- RESULTS.md -----------------------------------------------------------------------


def machine_lines() -> list[str]:
    """Date, machine and tree the figures come from."""
    cpu = platform.processor() or platform.machine()
    with suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    versions = ", ".join(
        f"{name} {metadata.version(name)}"
        for name in ("websockets", "cryptography", "pydantic", "psutil")
    )
    lines = [
        f"- date: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        f"- machine: nproc {os.cpu_count()}, {cpu}, {platform.system()} {platform.release()}",
        f"- python: {platform.python_implementation()} {platform.python_version()}; {versions}",
    ]
    tree = git_tree()
    if tree:
        lines.append(f"- tree: {tree}")
    return lines


def git_tree() -> str:
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""
    return f"{head} (with uncommitted changes)" if dirty else head


def command_line() -> str:
    """The command exactly as it was typed (interpreter included), from the repo root."""
    argv = list(sys.orig_argv)
    cwd = Path.cwd().resolve()
    where = "" if cwd == REPO else f"cd {shlex.quote(str(REPO))} && "
    return where + shlex.join(argv)


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def update_results(name: str, body: str, path: Path = RESULTS) -> None:
    """Replace (or add) the section between this benchmark's markers; atomically."""
    start, end = f"<!-- bench:{name}:start -->", f"<!-- bench:{name}:end -->"
    block = f"{start}\n{body.strip()}\n{end}"
    text = path.read_text() if path.exists() else RESULTS_HEADER
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.DOTALL)
    if pattern.search(text):
        text = pattern.sub(lambda _match: block, text, count=1)
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    scratch = path.with_suffix(".md.tmp")
    scratch.write_text(text)
    os.replace(scratch, path)
