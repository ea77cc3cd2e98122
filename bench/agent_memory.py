"""Idle agent: resident memory and CPU, and memory after one diagnostics snapshot.

Starts a real controller and a real agent (``python -m controller serve``, ``python -m agent
join``) on a free 127.0.0.1 port and waits until the agent's session shows as connected.
Then:

1. waits ``--idle`` seconds and reads the agent's RSS (psutil; also USS, PSS and peak);
2. reads the agent's CPU time over a further ``--window`` seconds of idleness, as % of one
   core (psutil's user + system, and the scheduler's own nanosecond count from
   /proc/PID/task/*/schedstat), with the number of wake-ups;
3. runs one ``python -m controller diag TICKET --json`` through the CLI and reads the
   agent's RSS again.

The baseline is a Python process that only imports websockets.asyncio.client, psutil,
cryptography's ed25519 and pydantic (the floor in the brief). Where the agent's memory
goes is shown by its mappings (smaps) and by an import ladder of the agent's own modules.

    python bench/agent_memory.py [--idle 30] [--window 30]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import _harness as h
import psutil

MIB = 1 << 20
TARGET_RSS_MIB = 40.0
TARGET_CPU_PERCENT = 0.05

#: What the brief's floor imports: the agent's four core libraries and nothing else.
FLOOR_IMPORTS = [
    "import websockets.asyncio.client",
    "import psutil",
    "from cryptography.hazmat.primitives.asymmetric import ed25519",
    "from pydantic import BaseModel",
]

#: The agent's own modules, in the order ``python -m agent join`` loads them (after the floor).
AGENT_IMPORTS = [
    "import typer",
    "import agent.config",
    "import agent.cli",
    "import protocol.messages",
    "import protocol.codec",
    "import protocol.session",
    "import agent.state",
    "import agent.connection",
    "import tenacity",
    "import agent.diagnostics",
]

LADDER = r"""
import json, sys
def rss():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0
rows = [["(bare interpreter)", rss(), len(sys.modules)]]
for statement in json.loads(sys.argv[1]):
    exec(statement)
    rows.append([statement, rss(), len(sys.modules)])
std = sys.stdlib_module_names
packages = sorted({m.split(".")[0] for m in sys.modules if m[0] != "_"} - std)
print(json.dumps({"rows": rows, "packages": packages}))
"""


# -- reading a process ------------------------------------------------------------------


@dataclass
class Memory:
    rss: int
    uss: int
    pss: int
    peak: int  # VmHWM: the highest RSS so far
    threads: int

    @classmethod
    def of(cls, process: psutil.Process) -> Memory:
        full = process.memory_full_info()
        peak = 0
        for line in Path(f"/proc/{process.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                peak = int(line.split()[1]) * 1024
        return cls(full.rss, full.uss, full.pss, peak, process.num_threads())


@dataclass
class Cpu:
    wall: float
    psutil_s: float
    sched_ns: int
    wakeups: int

    @property
    def percent(self) -> float:
        return 100.0 * self.psutil_s / self.wall

    @property
    def sched_percent(self) -> float:
        return 100.0 * self.sched_ns / 1e9 / self.wall


def sched_ns(pid: int) -> int:
    """Nanoseconds on a CPU, summed over the process's threads (scheduler's own count)."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            total += int((task / "schedstat").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            continue  # a thread that ended meanwhile
    return total


def context_switches(pid: int) -> int:
    """Voluntary context switches over all threads: each one is a sleep and a wake-up."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            for line in (task / "status").read_text().splitlines():
                if line.startswith("voluntary_ctxt_switches:"):
                    total += int(line.split()[1])
        except (OSError, ValueError, IndexError):
            continue
    return total


def cpu_seconds(process: psutil.Process) -> float:
    times = process.cpu_times()
    return float(times.user + times.system)


def idle_for(process: psutil.Process, seconds: float) -> None:
    """Sleep ``seconds``, checking once a second that the agent is still there."""
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        time.sleep(min(1.0, left))
        if not process.is_running() or process.status() == psutil.STATUS_ZOMBIE:
            raise h.BenchError("the agent exited while idle")


def measure_cpu(process: psutil.Process, seconds: float) -> Cpu:
    pid = process.pid
    cpu0, sched0, switches0 = cpu_seconds(process), sched_ns(pid), context_switches(pid)
    start = time.monotonic()
    idle_for(process, seconds)
    wall = time.monotonic() - start
    return Cpu(
        wall,
        cpu_seconds(process) - cpu0,
        sched_ns(pid) - sched0,
        context_switches(pid) - switches0,
    )


def mappings(process: psutil.Process, top: int = 10) -> list[tuple[str, int, int]]:
    """(mapping, RSS, private bytes) of the largest mappings, the rest summed as one row."""
    rows: list[tuple[str, int, int]] = []
    for m in process.memory_maps(grouped=True):
        path = m.path or "[anon]"
        if "site-packages/" in path:
            path = path.split("site-packages/", 1)[1]
        elif "/" in path:
            path = path.rsplit("/", 1)[1]
        rows.append((path, m.rss, m.private_clean + m.private_dirty))
    rows.sort(key=lambda row: row[1], reverse=True)
    rest = rows[top:]
    shown = rows[:top]
    if rest:
        shown.append(
            (f"({len(rest)} other mappings)", sum(r[1] for r in rest), sum(r[2] for r in rest))
        )
    return shown


def ladder(statements: list[str]) -> dict[str, Any]:
    """RSS after each import statement, in a fresh interpreter (same Python as the agent)."""
    result = subprocess.run(
        [sys.executable, "-c", LADDER, json.dumps(statements)],
        cwd=h.REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    if result.returncode != 0:
        raise h.BenchError(f"import ladder failed: {result.stderr}")
    data: dict[str, Any] = json.loads(result.stdout)
    return data


# -- report -----------------------------------------------------------------------------


def mib(value: int) -> str:
    return f"{value / MIB:.1f}"


def section(
    args: argparse.Namespace,
    idle: Memory,
    cpu: Cpu,
    after: Memory,
    diag: dict[str, Any],
    diag_seconds: float,
    own: dict[str, Any],
    maps: list[tuple[str, int, int]],
) -> str:
    floor_rss = int(own["rows"][len(FLOOR_IMPORTS)][1])
    bare_rss = int(own["rows"][0][1])
    rss_met = idle.rss / MIB <= TARGET_RSS_MIB
    tick_ms = 1000 / os.sysconf("SC_CLK_TCK")
    snapshot_ms = diag.get("data", {}).get("duration_ms", "?")
    rows = [
        [
            "idle agent RSS",
            f"{mib(idle.rss)} MiB",
            f"{mib(floor_rss)} MiB",
            f"≤ {TARGET_RSS_MIB:g} MB",
            h.verdict(rss_met),
        ],
        ["idle agent USS / PSS", f"{mib(idle.uss)} / {mib(idle.pss)} MiB", "", "", ""],
        [
            f"idle agent CPU (psutil user+sys, {tick_ms:g} ms ticks)",
            f"{cpu.percent:.4f} % of a core",
            "0",
            f"< {TARGET_CPU_PERCENT:g} %",
            h.verdict(cpu.percent < TARGET_CPU_PERCENT),
        ],
        [
            "idle agent CPU (schedstat, ns)",
            f"{cpu.sched_percent:.4f} % of a core",
            "0",
            f"< {TARGET_CPU_PERCENT:g} %",
            h.verdict(cpu.sched_percent < TARGET_CPU_PERCENT),
        ],
        [
            "idle wake-ups (voluntary context switches)",
            f"{cpu.wakeups / cpu.wall:.2f} /s",
            "",
            "",
            "",
        ],
        [
            "RSS after one `diag` snapshot",
            f"{mib(after.rss)} MiB (peak {mib(after.peak)})",
            "",
            f"(≤ {TARGET_RSS_MIB:g} MB idle)",
            "",
        ],
        [
            "`diag` through the CLI (one run)",
            f"{diag_seconds * 1000:.0f} ms wall, CLI start-up included; snapshot on the "
            f"agent: {snapshot_ms} ms",
            "psutil core set: 6 ms",
            "≤ 100 ms median (snapshot)",
            "one sample, not a median",
        ],
        ["bare `python -c` for scale", f"{mib(bare_rss)} MiB", "", "", ""],
    ]
    lines = [
        "## Idle agent memory and CPU (`bench/agent_memory.py`)",
        "",
        *h.machine_lines(),
        f"- command: `{h.command_line()}`",
        f"- what: one real agent joined to a real controller over TLS 1.3 on 127.0.0.1; "
        f"read {args.idle:g} s after its session showed connected; CPU over a further "
        f"{cpu.wall:.1f} s idle window (heartbeat every 20 s both ways); then one "
        "`python -m controller diag TICKET --json`. MiB = 2^20 bytes. Floor: a fresh "
        "interpreter that only runs " + "; ".join(f"`{s}`" for s in FLOOR_IMPORTS) + ".",
        f"- agent threads: {idle.threads} idle, {after.threads} after the snapshot",
        "",
        *h.table(["figure", "agent", "floor", "target", "verdict"], rows),
        "",
        "Where the idle agent's resident memory is (largest mappings, from smaps):",
        "",
        *h.table(
            ["mapping", "RSS MiB", "private MiB"], [[f"`{p}`", mib(r), mib(q)] for p, r, q in maps]
        ),
        "",
        "Import ladder in one fresh interpreter (RSS after each step): the floor's four "
        "imports first (the floor figure is the RSS after them), then the agent's own "
        "modules in the order the agent loads them:",
        "",
        *h.table(
            ["step", "RSS MiB", "+MiB", "modules"],
            ladder_rows(own),
        ),
        "",
        "Non-standard-library packages loaded by those imports: "
        + ", ".join(f"`{p}`" for p in own["packages"]),
    ]
    return "\n".join(lines)


def ladder_rows(data: dict[str, Any]) -> list[list[str]]:
    rows: list[list[str]] = []
    previous = 0
    for statement, rss, modules in data["rows"]:
        rows.append(
            [
                f"`{statement}`",
                mib(rss),
                f"+{mib(rss - previous)}" if previous else "",
                str(modules),
            ]
        )
        previous = rss
    return rows


# -- main -------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else "")
    parser.add_argument("--idle", type=float, default=30.0, help="seconds idle first (30)")
    parser.add_argument("--window", type=float, default=30.0, help="CPU window seconds (30)")
    parser.add_argument("--diag-timeout", type=float, default=60.0, help="seconds for diag")
    parser.add_argument("--no-write", action="store_true", help="do not touch RESULTS.md")
    parser.add_argument("--timeout", type=int, default=600, help="overall limit in s (600)")
    args = parser.parse_args(argv)
    if args.idle < 0 or args.window <= 0:
        parser.error("--idle must be ≥ 0 and --window > 0")
    return args


def benchmark(args: argparse.Namespace) -> None:
    with h.running_stack() as stack:
        assert stack.agent is not None
        agent = psutil.Process(stack.agent.pid)
        print(f"agent pid {agent.pid} connected to {stack.ticket}; idle {args.idle:g} s …")
        idle_for(agent, args.idle)
        idle = Memory.of(agent)
        maps = mappings(agent)
        print(f"idle RSS {mib(idle.rss)} MiB (USS {mib(idle.uss)}, PSS {mib(idle.pss)})")
        print(f"measuring CPU over {args.window:g} s …")
        cpu = measure_cpu(agent, args.window)
        print(
            f"idle CPU {cpu.percent:.4f} % (psutil), {cpu.sched_percent:.4f} % (schedstat), "
            f"{cpu.wakeups / cpu.wall:.2f} wake-ups/s"
        )
        started = time.monotonic()
        diag = stack.json(
            "diag",
            stack.ticket,
            "--timeout",
            str(args.diag_timeout),
            timeout=args.diag_timeout + 30,
        )
        diag_seconds = time.monotonic() - started
        if not diag.get("ok"):
            raise h.BenchError(f"diag failed: {diag.get('error')}")
        time.sleep(1.0)
        after = Memory.of(agent)
        print(
            f"diag took {diag_seconds * 1000:.0f} ms through the CLI; RSS after "
            f"{mib(after.rss)} MiB (peak {mib(after.peak)})"
        )
    own = ladder(FLOOR_IMPORTS + AGENT_IMPORTS)
    floor_rss = int(own["rows"][len(FLOOR_IMPORTS)][1])
    print(f"floor (imports only): {mib(floor_rss)} MiB")
    for row in ladder_rows(own):
        print("  " + "  ".join(row))
    print("largest mappings of the idle agent:")
    for path, rss, private in maps:
        print(f"  {mib(rss):>6} MiB  (private {mib(private)})  {path}")
    if not args.no_write:
        h.update_results(
            "agent-memory",
            section(args, idle, cpu, after, diag, diag_seconds, own, maps),
        )
        print(f"written to {h.RESULTS}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    h.install_deadline(args.timeout)
    try:
        benchmark(args)
    except h.BenchError as exc:
        print(f"benchmark failed: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
