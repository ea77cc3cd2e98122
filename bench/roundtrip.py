"""Round trip technician → controller → agent → back, beside the bare-websockets floor.

Starts a real controller and a real agent (``python -m controller serve``, ``python -m agent
join``) on a free 127.0.0.1 port, opens one authenticated API connection in this process
and times ``--count`` sequential ``agent.ping`` calls after ``--warmup`` unmeasured ones.

The floor is the same shape with nothing of ours in between: this process → a websockets
relay process → a websockets echo process → back, TLS 1.3 on every hop with a self-signed
P-256 certificate (like the controller's), default websockets settings, a frame of the
same size as our ``agent.ping`` call.

Figures go to stdout and to this benchmark's section of ``bench/RESULTS.md``.
Besides latency, the CPU each process spends per round trip is read with psutil.
``--profile`` adds separate passes of both loops with py-spy attached to every process
(controller, agent, client; relay, echo, client) and records where their CPU time goes,
by package and by function, in its own section of RESULTS.md.

    python bench/roundtrip.py [--count 5000] [--warmup 200] [--profile]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import ssl
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator, Mapping
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import _harness as h
import psutil

#: As long as our ``agent.ping`` call frame (117 bytes of JSON).
PAYLOAD = '{"v":1,"id":"0123456789abcdef01234567","reply_to":null,"type":"call",' + (
    '"method":"agent.ping","params":{"ticket":"T-1"}}'
)
TARGET_P50_MS = 1.0
TARGET_P99_MS = 3.0


# -- measuring --------------------------------------------------------------------------


@dataclass
class Run:
    label: str
    samples_ns: list[int]
    wall_s: float
    cpu_s: dict[str, float]  # process role -> CPU seconds (user + system) in the measured loop
    requested: int

    @property
    def truncated(self) -> bool:
        return len(self.samples_ns) < self.requested

    def ms(self, q: float) -> float:
        ordered = sorted(self.samples_ns)
        return h.percentile(ordered, q) / 1e6

    @property
    def mean_ms(self) -> float:
        return sum(self.samples_ns) / len(self.samples_ns) / 1e6

    @property
    def max_ms(self) -> float:
        return max(self.samples_ns) / 1e6

    @property
    def rate(self) -> float:
        return len(self.samples_ns) / self.wall_s

    def cpu_us_per_call(self, role: str) -> float:
        return self.cpu_s[role] / len(self.samples_ns) * 1e6


def cpu_seconds(process: psutil.Process) -> float:
    times = process.cpu_times()
    return float(times.user + times.system)


async def measure(
    label: str,
    call: Callable[[], Awaitable[object]],
    count: int,
    warmup: int,
    seconds: float,
    processes: Mapping[str, psutil.Process],
) -> Run:
    """``warmup`` unmeasured calls, then up to ``count`` timed ones (stops at ``seconds``)."""
    deadline = time.monotonic() + seconds
    for _ in range(warmup):
        await call()
        if time.monotonic() > deadline:
            raise h.BenchError(f"{label}: warm-up alone took longer than {seconds:g} s")
    before = {role: cpu_seconds(p) for role, p in processes.items()}
    samples: list[int] = []
    clock = time.perf_counter_ns
    started = clock()
    for _ in range(count):
        t0 = clock()
        await call()
        samples.append(clock() - t0)
        if time.monotonic() > deadline:
            break
    wall = (clock() - started) / 1e9
    cpu = {role: cpu_seconds(p) - before[role] for role, p in processes.items()}
    return Run(label, samples, wall, cpu, count)


async def measure_ours(
    stack: h.Stack, count: int, warmup: int, seconds: float, label: str = "helpline"
) -> Run:
    from controller.client import Connection, load_client_settings

    assert stack.controller is not None and stack.agent is not None
    processes = {
        "client": psutil.Process(),
        "controller": psutil.Process(stack.controller.pid),
        "agent": psutil.Process(stack.agent.pid),
    }
    params = {"ticket": stack.ticket}
    async with Connection(load_client_settings(stack.home)) as connection:

        async def ping() -> object:
            result = await connection.call("agent.ping", params)
            if not (isinstance(result, dict) and result.get("ok")):
                raise h.BenchError(f"agent.ping answered {result!r}")
            return result

        return await measure(label, ping, count, warmup, seconds, processes)


# -- the floor: bare websockets, TLS 1.3, relay + echo ------------------------------------


def make_certificate(directory: Path) -> tuple[Path, Path]:
    """A self-signed P-256 certificate for 127.0.0.1, made with ``cryptography``."""
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bench floor")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "floor.crt", directory / "floor.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_path.chmod(0o600)
    return cert_path, key_path


def server_context(certdir: Path) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.load_cert_chain(certdir / "floor.crt", certdir / "floor.key")
    return context


def client_context(certdir: Path) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.load_verify_locations(certdir / "floor.crt")
    return context


async def serve_role(role: str, port: int, upstream: int, certdir: Path, lifetime: float) -> None:
    """Child-process entry point: an echo server, or a relay to the echo server."""
    from websockets.asyncio.client import connect
    from websockets.asyncio.server import ServerConnection, serve
    from websockets.exceptions import ConnectionClosed

    async def echo(ws: ServerConnection) -> None:
        with suppress(ConnectionClosed):
            async for message in ws:
                await ws.send(message)

    async def relay(ws: ServerConnection) -> None:
        with suppress(ConnectionClosed):
            async with connect(f"wss://127.0.0.1:{upstream}", ssl=client_context(certdir)) as up:
                async for message in ws:
                    await up.send(message)
                    await ws.send(await up.recv())

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    handler = echo if role == "echo" else relay
    async with serve(handler, "127.0.0.1", port, ssl=server_context(certdir)):
        with suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), lifetime)


@contextmanager
def floor_servers(lifetime: float) -> Iterator[tuple[Path, int, dict[str, psutil.Process]]]:
    """Start the echo and relay processes; yield (certdir, relay port, processes)."""
    with h.temp_dir("helpline-bench-floor-") as certdir:
        make_certificate(certdir)
        echo_port, relay_port = h.free_port(), h.free_port()
        script = str(Path(__file__).resolve())
        common = ["--certdir", str(certdir), "--lifetime", str(lifetime)]
        children: list[subprocess.Popen[bytes]] = []
        try:
            for role, port, upstream in (("echo", echo_port, 0), ("relay", relay_port, echo_port)):
                argv = [sys.executable, script, "--serve", role, "--port", str(port)]
                child = subprocess.Popen(
                    [*argv, "--upstream", str(upstream), *common],
                    stdin=subprocess.DEVNULL,
                )
                children.append(child)

                def listening(
                    child: subprocess.Popen[bytes] = child, port: int = port, role: str = role
                ) -> bool:
                    if child.poll() is not None:
                        raise h.BenchError(f"floor {role} server exited {child.returncode}")
                    return h.port_open(port)

                h.wait_until(listening, 20, f"the floor {role} server")
            processes = {
                "echo": psutil.Process(children[0].pid),
                "relay": psutil.Process(children[1].pid),
            }
            yield certdir, relay_port, processes
        finally:
            for child in reversed(children):
                h.stop_process(child)


async def measure_floor(
    certdir: Path,
    relay_port: int,
    processes: dict[str, psutil.Process],
    count: int,
    warmup: int,
    seconds: float,
    label: str = "floor",
) -> Run:
    from websockets.asyncio.client import connect

    async with connect(f"wss://127.0.0.1:{relay_port}", ssl=client_context(certdir)) as ws:

        async def once() -> object:
            await ws.send(PAYLOAD)
            return await ws.recv()

        return await measure(
            label,
            once,
            count,
            warmup,
            seconds,
            {"client": psutil.Process(), **processes},
        )


# -- profiling (py-spy) -----------------------------------------------------------------


#: Leaf frames that mean "blocked" (epoll_wait; aiosqlite's worker in queue.get) although
#: py-spy may count them as active.
WAITING_LEAVES = frozenset(
    {"EpollSelector.select (selectors.py)", "_connection_worker_thread (aiosqlite/core.py)"}
)
#: Our code, minus the CLI wrappers every stack passes through.
OUR_MODULES = ("controller/", "protocol/", "agent/")
WRAPPERS = ("controller/cli/", "controller/__main__", "agent/cli.py", "agent/__main__")


@dataclass
class Profile:
    role: str
    samples: int  # all samples py-spy recorded as active
    waiting: int  # of which the leaf was epoll_wait
    self_top: list[tuple[str, float]]  # % of working (not waiting) samples
    inclusive_ours: list[tuple[str, float]]
    by_area: list[tuple[str, float]]

    @property
    def working(self) -> int:
        return self.samples - self.waiting


def where_of(frame: str) -> str:
    return frame.rsplit("(", 1)[-1].rstrip(")")


def area_of(frame: str) -> str:
    """``func (package/module.py)`` -> the package (or top module) it belongs to."""
    top = where_of(frame).split("/", 1)[0]
    return top.removesuffix(".py") or "?"


def is_ours(frame: str) -> bool:
    where = where_of(frame)
    return where.startswith(OUR_MODULES) and not where.startswith(WRAPPERS)


def summarise(role: str, raw: Path, top: int = 12) -> Profile:
    """Collapsed stacks from ``py-spy --format raw`` -> own / inclusive / per-package shares.

    Shares are of the samples where the process was working: stacks ending in epoll_wait
    are counted apart as waiting. Inclusive shares are given for our own functions only
    (the library frames above and below them are in the own-time and package tables).
    """
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    areas: Counter[str] = Counter()
    total = waiting = 0
    text = raw.read_text() if raw.exists() else ""
    for line in text.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack.strip() or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")
        total += count
        if frames[-1] in WAITING_LEAVES:
            waiting += count
            continue
        own[frames[-1]] += count
        areas[area_of(frames[-1])] += count
        for frame in set(frames):
            if is_ours(frame):
                inclusive[frame] += count
    working = total - waiting

    def share(counter: Counter[str], n: int) -> list[tuple[str, float]]:
        return (
            [(name, 100.0 * c / working) for name, c in counter.most_common(n)] if working else []
        )

    return Profile(role, total, waiting, share(own, top), share(inclusive, top), share(areas, 10))


def start_spies(
    pids: Mapping[str, int], outdir: Path, rate: int, seconds: float, blocking: bool
) -> dict[str, subprocess.Popen[bytes]]:
    """One ``py-spy record`` per process, writing collapsed stacks to ``outdir/ROLE.txt``."""
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(spy).exists():
        raise h.BenchError("--profile needs py-spy: pip install py-spy")
    outdir.mkdir(parents=True, exist_ok=True)
    spies: dict[str, subprocess.Popen[bytes]] = {}
    for role, pid in pids.items():
        argv = [
            *(spy, "record", "--pid", str(pid), "--format", "raw", "--nolineno"),
            *("--rate", str(rate), "--duration", str(int(seconds) + 30)),
            *("--output", str(outdir / f"{role}.txt")),
            *(() if blocking else ("--nonblocking",)),
        ]
        spies[role] = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
    return spies


def stop_spies(spies: Mapping[str, subprocess.Popen[bytes]]) -> None:
    for process in spies.values():
        if process.poll() is None:
            process.send_signal(signal.SIGINT)  # py-spy writes its file on SIGINT
    for process in spies.values():
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


async def profile_pass(
    pids: Mapping[str, int],
    run: Callable[[], Awaitable[Run]],
    outdir: Path,
    rate: int,
    seconds: float,
    blocking: bool,
) -> tuple[Run, list[Profile]]:
    """Run one timed loop again with py-spy sampling each of ``pids``."""
    spies = start_spies(pids, outdir, rate, seconds, blocking)
    try:
        await asyncio.sleep(1.0)  # let py-spy attach before the timed calls start
        result = await run()
    finally:
        stop_spies(spies)
    return result, [summarise(role, outdir / f"{role}.txt") for role in pids]


# -- reporting --------------------------------------------------------------------------


def fmt(value: float) -> str:
    return f"{value:.3f}"


def figures_table(ours: Run, floor: Run | None) -> list[str]:
    def row(name: str, pick: Callable[[Run], float], target: str, met: bool | None) -> list[str]:
        cells = [name, fmt(pick(ours))]
        if floor is not None:
            cells.append(fmt(pick(floor)))
        cells += [target, "" if met is None else h.verdict(met)]
        return cells

    header = ["figure", "helpline (ms)"]
    if floor is not None:
        header.append("floor: bare websockets relay (ms)")
    header += ["target", "verdict"]
    p50, p99 = ours.ms(0.50), ours.ms(0.99)
    rows = [
        row("p50", lambda r: r.ms(0.50), f"≤ {TARGET_P50_MS:g} ms", p50 <= TARGET_P50_MS),
        row("p90", lambda r: r.ms(0.90), "", None),
        row("p99", lambda r: r.ms(0.99), f"≤ {TARGET_P99_MS:g} ms", p99 <= TARGET_P99_MS),
        row("max", lambda r: r.max_ms, "", None),
        row("mean", lambda r: r.mean_ms, "", None),
    ]
    rate = ["requests/s", f"{ours.rate:,.0f}"]
    if floor is not None:
        rate.append(f"{floor.rate:,.0f}")
    rows.append([*rate, "", ""])
    return h.table(header, rows)


def cpu_table(ours: Run, floor: Run | None) -> list[str]:
    rows = [
        [ours.label, role, f"{ours.cpu_us_per_call(role):.0f}"]
        for role in ("client", "controller", "agent")
    ]
    rows.append(
        [ours.label, "**sum**", f"**{sum(ours.cpu_s.values()) / len(ours.samples_ns) * 1e6:.0f}**"]
    )
    if floor is not None:
        rows += [
            [floor.label, role, f"{floor.cpu_us_per_call(role):.0f}"]
            for role in ("client", "relay", "echo")
        ]
        total = sum(floor.cpu_s.values()) / len(floor.samples_ns) * 1e6
        rows.append([floor.label, "**sum**", f"**{total:.0f}**"])
    return h.table(["run", "process", "CPU µs per round trip"], rows)


def print_run(run: Run) -> None:
    cut = f" (stopped at the time limit after {len(run.samples_ns)})" if run.truncated else ""
    print(
        f"{run.label:>24}: n={len(run.samples_ns)}{cut}  p50 {run.ms(0.5):.3f}  "
        f"p90 {run.ms(0.9):.3f}  p99 {run.ms(0.99):.3f}  max {run.max_ms:.3f}  "
        f"mean {run.mean_ms:.3f} ms  {run.rate:,.0f} req/s  CPU µs/call "
        + ", ".join(f"{role} {run.cpu_us_per_call(role):.0f}" for role in run.cpu_s)
    )


def section(ours: Run, floor: Run | None, warmup: int) -> str:
    n = len(ours.samples_ns)
    lines = [
        "## Round trip: technician → controller → agent → back (`bench/roundtrip.py`)",
        "",
        *h.machine_lines(),
        f"- command: `{h.command_line()}`",
        f"- what: {n} sequential `agent.ping` calls on one open API connection after "
        f"{warmup} unmeasured ones, timed with `time.perf_counter_ns` in the client; "
        "controller and agent are real processes over TLS 1.3 on 127.0.0.1 "
        "(SQLite store). Floor: the same count of "
        f"{len(PAYLOAD)}-byte frames client → websockets relay process → websockets echo "
        "process → back, TLS 1.3 (self-signed P-256) on both hops, default websockets "
        "settings.",
    ]
    if ours.truncated or (floor is not None and floor.truncated):
        lines.append("- note: a run stopped at its time limit before reaching its count.")
    lines += ["", *figures_table(ours, floor), "", "CPU spent per round trip, by process:", ""]
    lines += cpu_table(ours, floor)
    return "\n".join(lines)


def package_table(profiled: list[tuple[Run, list[Profile]]], top: int = 12) -> list[str]:
    """CPU µs per round trip by package and process: CPU per call x the package's share."""
    columns: list[tuple[str, dict[str, float]]] = []
    for run, profiles in profiled:
        for profile in profiles:
            cpu_us = run.cpu_us_per_call(profile.role.removeprefix("floor-"))
            columns.append(
                (profile.role, {name: cpu_us * pct / 100 for name, pct in profile.by_area})
            )
    totals: Counter[str] = Counter()
    for _role, shares in columns:
        totals.update(shares)
    names = [name for name, _ in totals.most_common(top)]
    rows = [[name] + [f"{shares.get(name, 0.0):.0f}" for _, shares in columns] for name in names]
    rows.append(
        ["(other)"]
        + [f"{sum(v for k, v in shares.items() if k not in names):.0f}" for _, shares in columns]
    )
    rows.append(["**all**"] + [f"**{sum(shares.values()):.0f}**" for _, shares in columns])
    return h.table(["package", *(role for role, _ in columns)], rows)


def profile_section(
    profiled: list[tuple[Run, list[Profile]]], rate: int, blocking: bool, top: int = 10
) -> str:
    mode = "" if blocking else " --nonblocking"
    how = "pausing each process per sample" if blocking else "without pausing"
    passes = "; ".join(
        f"{run.label}: n={len(run.samples_ns)}, p50 {run.ms(0.5):.3f} ms, p99 "
        f"{run.ms(0.99):.3f} ms, CPU µs per call "
        + ", ".join(f"{role} {run.cpu_us_per_call(role):.0f}" for role in run.cpu_s)
        for run, _ in profiled
    )
    lines = [
        "## Round trip profile (`bench/roundtrip.py --profile`)",
        "",
        *h.machine_lines(),
        f"- command: `{h.command_line()}`",
        "- what: separate passes (not the timed figures of the round-trip section) of the same "
        "loops with "
        f"`py-spy record{mode} --rate {rate}` on every process ({how}; idle threads "
        "excluded by py-spy; stacks ending blocked in epoll_wait or aiosqlite's queue are "
        "set apart, so shares are of the time each process was working).",
        f"- passes under py-spy: {passes}.",
        "",
        "CPU µs per round trip by package of the running (leaf) frame, each process's CPU "
        "per call split by its working samples:",
        "",
        *package_table(profiled),
    ]
    for _run, profiles in profiled:
        for profile in profiles:
            own = h.table(
                ["own time: function (module)", "%"],
                [[f"`{name}`", f"{pct:.1f}"] for name, pct in profile.self_top[:top]],
            )
            lines += [
                "",
                f"### {profile.role}: {profile.working} working samples "
                f"(+{profile.waiting} blocked, left out)",
                "",
                *own,
            ]
            if profile.inclusive_ours:
                lines += [
                    "",
                    *h.table(
                        ["inclusive, our code: function (module)", "%"],
                        [[f"`{name}`", f"{pct:.1f}"] for name, pct in profile.inclusive_ours[:top]],
                    ),
                ]
    return "\n".join(lines)


def print_profile(profile: Profile) -> None:
    print(f"\n== {profile.role}: {profile.working} working + {profile.waiting} in epoll_wait")
    print("  by package: " + ", ".join(f"{n} {p:.1f}%" for n, p in profile.by_area[:10]))
    print("  own time:")
    for name, pct in profile.self_top:
        print(f"    {pct:5.1f}%  {name}")
    print("  inclusive, our code:")
    for name, pct in profile.inclusive_ours:
        print(f"    {pct:5.1f}%  {name}")


# -- main -------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else "")
    parser.add_argument("--count", type=int, default=5000, help="timed round trips (5000)")
    parser.add_argument("--warmup", type=int, default=200, help="unmeasured first (200)")
    parser.add_argument(
        "--max-seconds", type=float, default=180.0, help="time limit of each timed loop (180)"
    )
    parser.add_argument("--no-floor", action="store_true", help="skip the websockets floor")
    parser.add_argument("--no-write", action="store_true", help="do not touch RESULTS.md")
    parser.add_argument("--profile", action="store_true", help="add a py-spy pass")
    parser.add_argument("--profile-dir", type=Path, help="keep py-spy raw stacks here")
    parser.add_argument("--profile-rate", type=int, default=500, help="py-spy samples/s")
    parser.add_argument(
        "--profile-nonblocking",
        action="store_true",
        help="py-spy without pausing the processes (calls less slowed, stacks may be cut)",
    )
    parser.add_argument("--timeout", type=int, default=900, help="overall limit in seconds (900)")
    # internal: the floor's relay and echo processes run this same file
    parser.add_argument("--serve", choices=("echo", "relay"), help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--upstream", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--certdir", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--lifetime", type=float, default=900.0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.count < 1 or args.warmup < 0:
        parser.error("--count must be ≥ 1 and --warmup ≥ 0")
    return args


async def benchmark(args: argparse.Namespace) -> None:
    floor: Run | None = None
    profiled: list[tuple[Run, list[Profile]]] = []
    blocking = not args.profile_nonblocking
    with ExitStack() as scratch:
        outdir = args.profile_dir or scratch.enter_context(h.temp_dir("helpline-bench-spy-"))
        with h.running_stack() as stack:
            assert stack.controller is not None and stack.agent is not None
            print(
                f"controller pid {stack.controller.pid}, agent pid {stack.agent.pid}, "
                f"ticket {stack.ticket}"
            )
            ours = await measure_ours(stack, args.count, args.warmup, args.max_seconds)
            print_run(ours)
            if args.profile:
                pids = {
                    "controller": stack.controller.pid,
                    "agent": stack.agent.pid,
                    "client": os.getpid(),
                }
                profiled.append(
                    await profile_pass(
                        pids,
                        lambda: measure_ours(
                            stack, args.count, args.warmup, args.max_seconds, "helpline, py-spy"
                        ),
                        outdir,
                        args.profile_rate,
                        args.max_seconds,
                        blocking,
                    )
                )
                print_run(profiled[-1][0])
        if not args.no_floor:
            with floor_servers(args.timeout) as (certdir, relay_port, processes):
                floor = await measure_floor(
                    certdir, relay_port, processes, args.count, args.warmup, args.max_seconds
                )
                print_run(floor)
                if args.profile:
                    pids = {
                        "floor-relay": processes["relay"].pid,
                        "floor-echo": processes["echo"].pid,
                        "floor-client": os.getpid(),
                    }
                    profiled.append(
                        await profile_pass(
                            pids,
                            lambda: measure_floor(
                                certdir,
                                relay_port,
                                processes,
                                args.count,
                                args.warmup,
                                args.max_seconds,
                                "floor, py-spy",
                            ),
                            outdir,
                            args.profile_rate,
                            args.max_seconds,
                            blocking,
                        )
                    )
                    print_run(profiled[-1][0])
    print()
    print("\n".join(figures_table(ours, floor)))
    print()
    print("\n".join(cpu_table(ours, floor)))
    for _run, profiles in profiled:
        for profile in profiles:
            print_profile(profile)
    if profiled:
        print("\nCPU µs per round trip by package:")
        print("\n".join(package_table(profiled)))
    if not args.no_write:
        h.update_results("roundtrip", section(ours, floor, args.warmup))
        if profiled:
            h.update_results(
                "roundtrip-profile",
                profile_section(profiled, rate=args.profile_rate, blocking=blocking),
            )
        print(f"\nwritten to {h.RESULTS}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.serve:
        if args.port is None or args.certdir is None:
            raise SystemExit("--serve needs --port and --certdir")
        asyncio.run(serve_role(args.serve, args.port, args.upstream, args.certdir, args.lifetime))
        return 0
    h.install_deadline(args.timeout)
    try:
        asyncio.run(benchmark(args))
    except h.BenchError as exc:
        print(f"benchmark failed: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
