"""Full diagnostics snapshot on a real agent: how long it takes, and what it costs in memory.

Starts a real controller and a real agent (``python -m controller serve``, ``python -m agent
join``) on a free 127.0.0.1 port and waits until the agent's session shows as connected and
``--settle`` seconds more. Then:

1. reads the idle agent's resident memory (RSS, and USS: the pages only it holds);
2. takes ``--count`` full snapshots one after another through one authenticated API
   connection in this process (``diag.run``, every collector), ``--gap`` seconds apart, and
   records each snapshot's own duration as the agent measured it (``duration_ms``: all
   collectors, bounding and redaction; not the network), each collector's time, and the
   technician's wall time per call (API, agent, store, findings);
3. reads the agent's RSS again after the first snapshot and after the last.

The first snapshot of an agent process is reported on its own: it imports the collectors
(psutil included) and asks the package manager once (later snapshots reuse that answer
until dpkg's or apt's files change). The floor is psutil's core calls alone, timed in this
process: boot time, users, per-core CPU times, memory, swap, partitions with usage, and one
pass over the processes.

    python bench/diag_snapshot.py [--count 30] [--settle 5] [--gap 0.2]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from dataclasses import dataclass, field

import _harness as h
import psutil

TARGET_MEDIAN_MS = 100.0
TARGET_RSS_DELTA = 5_000_000  # bytes: "within 5 MB of idle"
MIB = 1 << 20


@dataclass
class Sample:
    duration_ms: float
    wall_ms: float
    timings: dict[str, float]
    findings: int
    errors: dict[str, str]


@dataclass
class Memory:
    rss: int
    uss: int

    @classmethod
    def of(cls, process: psutil.Process) -> Memory:
        full = process.memory_full_info()
        return cls(int(full.rss), int(full.uss))


@dataclass
class Outcome:
    idle: Memory
    after_first: Memory
    after_all: Memory
    samples: list[Sample] = field(default_factory=list)


def psutil_floor(count: int) -> list[float]:
    """psutil's core calls alone (no sampling window), in ms, ``count`` times."""
    times: list[float] = []
    attrs = ["pid", "name", "ppid", "status", "memory_info", "cpu_times"]
    for _ in range(count):
        began = time.perf_counter()
        psutil.boot_time()
        psutil.users()
        psutil.cpu_times(percpu=True)
        psutil.virtual_memory()
        psutil.swap_memory()
        for part in psutil.disk_partitions(all=False):
            try:
                psutil.disk_usage(part.mountpoint)
            except OSError:
                continue
        list(psutil.process_iter(attrs, ad_value=None))
        getattr(psutil.process_iter, "cache_clear", lambda: None)()
        times.append((time.perf_counter() - began) * 1000)
    return times


async def snapshots(stack: h.Stack, agent: psutil.Process, args: argparse.Namespace) -> Outcome:
    from controller.client import Connection, load_client_settings

    idle = Memory.of(agent)
    print(f"idle agent: RSS {idle.rss / MIB:.1f} MiB, USS {idle.uss / MIB:.1f} MiB")
    outcome = Outcome(idle=idle, after_first=idle, after_all=idle)
    async with Connection(load_client_settings(stack.home)) as api:
        for n in range(args.count):
            began = time.perf_counter()
            result = await api.call("diag.run", {"ticket": stack.ticket, "timeout": 60})
            wall = (time.perf_counter() - began) * 1000
            if not result["ok"]:
                raise h.BenchError(f"snapshot {n + 1} failed: {result['error']}")
            data = result["data"]
            outcome.samples.append(
                Sample(
                    float(data["duration_ms"]),
                    wall,
                    {k: float(v) for k, v in data.get("timings_ms", {}).items()},
                    len(result["findings"]),
                    dict(data.get("errors", {})),
                )
            )
            if n == 0:
                await asyncio.sleep(1.0)  # let the collector threads end
                outcome.after_first = Memory.of(agent)
                print(
                    f"first snapshot {data['duration_ms']} ms on the agent; RSS "
                    f"{outcome.after_first.rss / MIB:.1f} MiB"
                )
            await asyncio.sleep(args.gap)
    await asyncio.sleep(1.0)
    outcome.after_all = Memory.of(agent)
    return outcome


def stats(values: list[float]) -> tuple[float, float, float]:
    ordered = sorted(values)
    return statistics.median(ordered), h.percentile(ordered, 0.9), ordered[-1]


def section(args: argparse.Namespace, out: Outcome, floor: list[float]) -> str:
    samples = out.samples
    durations = [s.duration_ms for s in samples]
    warm = durations[1:] or durations
    median, p90, worst = stats(durations)
    warm_median, warm_p90, warm_max = stats(warm)
    wall_median, _, _ = stats([s.wall_ms for s in samples])
    floor_median = statistics.median(floor)
    delta_first = out.after_first.rss - out.idle.rss
    delta_all = out.after_all.rss - out.idle.rss
    delta = max(delta_first, delta_all)
    collectors = sorted({name for s in samples for name in s.timings})
    per_collector = []
    for name in collectors:
        warm_times = [s.timings[name] for s in samples[1:] if name in s.timings] or [0.0]
        per_collector.append(
            [name, f"{statistics.median(warm_times):.1f}", f"{samples[0].timings.get(name, 0):.1f}"]
        )
    errors = sorted({f"{k}: {v}" for s in samples for k, v in s.errors.items()})
    rows = [
        [
            f"snapshot on the agent, median of {len(samples)}",
            f"{median:.1f} ms",
            f"psutil core calls: {floor_median:.1f} ms",
            f"≤ {TARGET_MEDIAN_MS:g} ms",
            h.verdict(median <= TARGET_MEDIAN_MS),
        ],
        ["p90 / max (all)", f"{p90:.1f} / {worst:.1f} ms", "", "", ""],
        [
            "first snapshot of the agent process (cold)",
            f"{durations[0]:.1f} ms",
            "",
            "",
            "",
        ],
        [
            f"later snapshots (warm): median / p90 / max of {len(warm)}",
            f"{warm_median:.1f} / {warm_p90:.1f} / {warm_max:.1f} ms",
            "",
            "",
            "",
        ],
        [
            "`diag.run` wall time for the technician, median",
            f"{wall_median:.1f} ms",
            "",
            "",
            "",
        ],
        [
            "agent RSS idle → after first → after last",
            f"{out.idle.rss / MIB:.1f} → {out.after_first.rss / MIB:.1f} → "
            f"{out.after_all.rss / MIB:.1f} MiB",
            "",
            "",
            "",
        ],
        [
            "agent RSS growth over idle (worst of the two)",
            f"{delta / 1e6:+.2f} MB ({delta / MIB:+.2f} MiB)",
            "",
            "≤ 5 MB",
            h.verdict(delta <= TARGET_RSS_DELTA),
        ],
        [
            "agent USS idle → after last",
            f"{out.idle.uss / MIB:.1f} → {out.after_all.uss / MIB:.1f} MiB",
            "",
            "",
            "",
        ],
        ["findings per snapshot", str(samples[-1].findings), "", "", ""],
    ]
    lines = [
        "## Diagnostics snapshot on the agent (`bench/diag_snapshot.py`)",
        "",
        *h.machine_lines(),
        f"- command: `{h.command_line()}`",
        f"- what: one real agent joined to a real controller over TLS 1.3 on 127.0.0.1; after "
        f"{args.settle:g} s idle, {len(samples)} full snapshots (all {len(collectors)} "
        f"collectors) through one API connection, {args.gap:g} s apart. Snapshot time is the "
        "agent's own `duration_ms` (collectors, bounding, redaction). RSS read with psutil, "
        "1 s after the first and after the last snapshot. The floor is psutil's core calls "
        f"alone in the benchmark process, median of {len(floor)}. 1 MB = 10^6 bytes, "
        "1 MiB = 2^20.",
        "",
        *h.table(["figure", "agent", "floor", "target", "verdict"], rows),
        "",
        "Per collector (ms, each in its own thread, all at once; the 50 ms CPU sampling "
        "window is shared by cpu, memory and processes):",
        "",
        *h.table(["collector", "median (warm)", "first (cold)"], per_collector),
    ]
    if errors:
        lines += ["", "Collector errors seen: " + "; ".join(f"`{e}`" for e in errors)]
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else "")
    parser.add_argument("--count", type=int, default=30, help="snapshots to take (30)")
    parser.add_argument("--settle", type=float, default=5.0, help="idle seconds first (5)")
    parser.add_argument("--gap", type=float, default=0.2, help="seconds between snapshots")
    parser.add_argument("--no-write", action="store_true", help="do not touch RESULTS.md")
    parser.add_argument("--timeout", type=int, default=600, help="overall limit in s (600)")
    args = parser.parse_args(argv)
    if args.count < 2 or args.settle < 0 or args.gap < 0:
        parser.error("--count must be ≥ 2, --settle and --gap ≥ 0")
    return args


def benchmark(args: argparse.Namespace) -> None:
    with h.running_stack() as stack:
        assert stack.agent is not None
        agent = psutil.Process(stack.agent.pid)
        print(f"agent pid {agent.pid} connected to {stack.ticket}; settling {args.settle:g} s …")
        time.sleep(args.settle)
        out = asyncio.run(snapshots(stack, agent, args))
    floor = psutil_floor(args.count)
    durations = [s.duration_ms for s in out.samples]
    median, p90, worst = stats(durations)
    print(
        f"snapshot on the agent: median {median:.1f} ms, p90 {p90:.1f}, max {worst:.1f} "
        f"(first {durations[0]:.1f}); psutil core calls {statistics.median(floor):.1f} ms"
    )
    print(
        f"agent RSS idle {out.idle.rss / MIB:.1f} MiB, after first "
        f"{out.after_first.rss / MIB:.1f}, after last {out.after_all.rss / MIB:.1f}"
    )
    if not args.no_write:
        h.update_results("diag_snapshot", section(args, out, floor))
        print(f"written to {h.RESULTS}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    h.install_deadline(args.timeout)
    sys.path.insert(0, str(h.REPO))
    try:
        benchmark(args)
    except h.BenchError as exc:
        print(f"benchmark failed: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
