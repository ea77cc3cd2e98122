"""The long fuzz: a million hostile frames at one real controller, on both endpoints.

Starts a real controller (``python -m controller serve``) on a free 127.0.0.1 port, enrols a
technician with an SSH key, and runs several connections in parallel, each in one lane:

``api-post``
    logs in as the technician, then sends batches of ``call`` frames (every method, params
    mutated), each batch followed by a probe (``whoami``) that must be answered;
``agent-post``
    a forged agent of our own key joins a ticket once, then resumes its session and sends
    batches of results, fix output and ratings with fake or real ``reply_to`` ids (real:
    the requests the technician lanes' calls make it receive), each batch followed by a
    probe (a result the controller must acknowledge);
``api-pre`` / ``agent-pre``
    a fresh connection per frame, sent before any login (joins signed over the real
    challenge, so mutated ones get past the signature to the code check).

Every frame is a valid protocol message turned hostile by one mutation (tests/hostile.py).
A connection the controller closes is opened again. A few *silent* connections (TLS and
the upgrade, then nothing) stay open from start to end.

Reported: process exits, tracebacks in the controller log (count and the first distinct
ones with where they were raised), hung connections (no answer and no close within
``--hang-seconds``), abnormal closes (1011), ``internal`` replies and SQL in error texts,
the controller's RSS at start, after a warm-up (the first WARM_FRAMES frames), at the end
and after ``--settle`` seconds (growth is against the warm figure), and frames per
second. A real agent then joins and the real CLI makes a call: both must still work.

    python bench/fuzz.py [--frames 1000000] [--label NAME] [--seed 1]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import random
import re
import shutil
import subprocess
import sys
import time
from collections import Counter
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import _harness as h
import psutil

sys.path.insert(0, str(h.REPO))

from protocol import codec
from tests import hostile

#: connections per lane; the pre-login lanes open one connection per frame
LANE_WORKERS = {"api-post": 3, "agent-post": 3, "api-pre": 1, "agent-pre": 1}
BATCH = 8
#: share of frames on a logged-in connection that are broken as frames (and end it); the
#: rest carry hostile content to the handlers behind the login
BREAKING = 0.005
RSS_TARGET = 0.10
#: the RSS the growth is measured against is read after this many frames: the controller
#: imports the modules of a call on its first use and fills its caches (compiled SQL,
#: pydantic validators), which the first thousands of frames of every kind trigger; the
#: start figure is reported beside it
WARM_FRAMES = 20_000


@dataclass
class Findings:
    """What went wrong, with the frames that did it."""

    sent: Counter[str] = field(default_factory=Counter)
    connections: Counter[str] = field(default_factory=Counter)
    closes: Counter[str] = field(default_factory=Counter)
    refused_logins: Counter[str] = field(default_factory=Counter)
    #: frames over the lane's limit, each the last of its batch
    oversized: Counter[str] = field(default_factory=Counter)
    hung: list[str] = field(default_factory=list)
    abnormal: list[str] = field(default_factory=list)
    internal: list[str] = field(default_factory=list)
    sql: list[str] = field(default_factory=list)
    internal_count: int = 0
    hung_count: int = 0
    abnormal_count: int = 0

    @property
    def total(self) -> int:
        return sum(self.sent.values())


@dataclass
class Fuzz:
    stack: h.Stack
    target: int
    hang: float
    rng: random.Random
    key_path: str
    pin: str
    ticket: str
    methods: tuple[str, ...]
    found: Findings = field(default_factory=Findings)
    #: request ids the controller sent to our forged agents: answered with hostile results
    requests: list[str] = field(default_factory=list)
    #: how many examples of each kind of ``internal`` reply were kept
    internal_seen: Counter[str] = field(default_factory=Counter)
    #: set when every lane has stopped
    finished: asyncio.Event = field(default_factory=asyncio.Event)

    #: stop sending at this time.monotonic() even if the frame count is not reached
    stop_at: float = float("inf")

    @property
    def done(self) -> bool:
        return self.found.total >= self.target or time.monotonic() >= self.stop_at

    def templates(self) -> hostile.Templates:
        return hostile.Templates(methods=self.methods, request_ids=self.requests)

    # -- logged-in lanes --------------------------------------------------------------

    async def logged_in(self, lane: str, index: int) -> None:
        """Log in, send batches with a probe after each; log in again when closed."""
        agent = hostile.ForgedAgent(self.pin)
        templates = self.templates()
        source = {"local_addr": (f"127.0.{10 + index}.{1 if lane == 'api-post' else 2}", 0)}
        while not self.done:
            try:
                if lane == "api-post":
                    ws = await hostile.technician_login(
                        self.stack.url, self.key_path, self.pin, **source
                    )
                else:
                    ws = await self._agent_login(agent, **source)
            except (hostile.PeerRefused, OSError, TimeoutError) as exc:
                self.found.refused_logins[f"{lane}: {exc}"] += 1
                await asyncio.sleep(1)
                continue
            templates.agent_public_key = agent.public_key
            templates.session_id = agent.session_id or templates.session_id
            self.found.connections[lane] += 1
            await self._batches(ws, lane, templates)
            await ws.close()

    async def _agent_login(self, agent: hostile.ForgedAgent, **source: Any) -> Any:
        if agent.session_id is not None:
            try:
                return await agent.login(self.stack.url, **source)
            except hostile.PeerRefused as exc:
                if exc.code not in ("session_ended", "grant_expired"):
                    raise
                self.found.refused_logins[f"agent-post resume: {exc}"] += 1
        code = await self._issue_code()
        return await agent.login(self.stack.url, code, **source)

    async def _issue_code(self) -> str:
        """A code for our forged agents, on a fresh ticket when the fuzz closed ours."""
        ws = await hostile.technician_login(self.stack.url, self.key_path, self.pin)
        try:
            try:
                code = await self._call(ws, "code.issue", {"ticket": self.ticket})
            except hostile.PeerRefused:
                # the technician lanes may have resolved or closed it: that is their right
                params = {"title": "fuzz", "customer": "fuzz"}
                self.ticket = str((await self._call(ws, "ticket.open", params))["id"])
                code = await self._call(ws, "code.issue", {"ticket": self.ticket})
            return str(code["code"])
        finally:
            await ws.close()

    async def _call(self, ws: Any, method: str, params: dict[str, Any]) -> Any:
        import json

        probe, call_id = hostile.probe("api-post")
        await ws.send(json.dumps({**json.loads(probe), "method": method, "params": params}))
        while True:
            reply = json.loads(await asyncio.wait_for(ws.recv(), self.hang))
            if reply.get("reply_to") == call_id:
                if not reply["ok"]:
                    raise hostile.PeerRefused(str(reply.get("error_code")))
                return reply["result"]

    async def _batches(self, ws: Any, lane: str, templates: hostile.Templates) -> None:
        from websockets.exceptions import ConnectionClosed

        sent: dict[str, str | bytes] = {}
        waiting: dict[str, asyncio.Event] = {}
        limit = codec.API_MAX_FRAME if lane == "api-post" else codec.AGENT_MAX_FRAME
        reader = asyncio.create_task(self._read(ws, lane, sent, waiting, templates))
        try:
            while not self.done:
                batch = [
                    hostile.hostile_frame(lane, self.rng, templates, BREAKING) for _ in range(BATCH)
                ]
                probe, probe_id = hostile.probe(lane)
                answered = waiting[probe_id] = asyncio.Event()
                while len(sent) > 2_000:  # calls answer late: keep the recent ones
                    del sent[next(iter(sent))]
                try:
                    for frame in batch:
                        await ws.send(frame)
                        self.found.sent[lane] += 1
                        sent[_frame_id(frame)] = frame
                        if len(frame) > limit:
                            # refused from its header: the controller fails the connection
                            # and closes it at once (RFC 6455, 7.1.7), discarding whatever
                            # follows unread, and TCP may then reset the connection before
                            # a peer that kept writing reads the close frame (a 1006 that
                            # says nothing about the controller). Stop and read the close.
                            self.found.oversized[lane] += 1
                            break
                    else:
                        await ws.send(probe)
                except ConnectionClosed:
                    pass
                closed = asyncio.ensure_future(ws.wait_closed())
                got = asyncio.ensure_future(answered.wait())
                await asyncio.wait({closed, got}, timeout=self.hang, return_when="FIRST_COMPLETED")
                waiting.pop(probe_id, None)
                for task in (closed, got):
                    task.cancel()
                if answered.is_set():
                    continue
                if ws.close_code is None:
                    self.found.hung_count += 1
                    if len(self.found.hung) < 5:
                        self.found.hung.append(
                            f"{lane}: no answer to the probe after a batch: {_batch_text(batch)}"
                        )
                    return
                self._closed(ws, lane, batch)
                return
        finally:
            reader.cancel()

    async def _read(
        self,
        ws: Any,
        lane: str,
        sent: dict[str, str | bytes],
        waiting: dict[str, asyncio.Event],
        templates: hostile.Templates,
    ) -> None:
        import json

        from websockets.exceptions import ConnectionClosed

        try:
            async for raw in ws:
                try:
                    data = json.loads(raw)
                except ValueError:
                    continue
                answer = data.get("reply_to") or data.get("request_id")
                if answer in waiting:
                    waiting[answer].set()
                kind = data.get("type")
                if kind in ("ping", "diag_request", "fix_proposal"):
                    # the technician lanes asked our forged agent: answer, hostile
                    self.requests.append(data["id"])
                    del self.requests[:-20]
                    await ws.send(hostile.hostile_result(data["id"], self.rng, templates))
                    self.found.sent[lane] += 1
                text = f"{data.get('error') or ''} {data.get('message') or ''}"
                if kind == "reply" and data.get("error_code") == "internal":
                    self.found.internal_count += 1
                    shown = text.strip()[:200].encode("unicode_escape").decode("ascii")
                    cause = sent.get(str(answer))
                    if cause is not None and self.internal_seen[shown[:40]] < 2:
                        self.internal_seen[shown[:40]] += 1
                        self.found.internal.append(f"{shown} ← {hostile.describe(cause)}")
                if any(word in text for word in hostile.SQL_WORDS) and len(self.found.sql) < 10:
                    self.found.sql.append(text.strip()[:300].encode("unicode_escape").decode())
        except ConnectionClosed:
            pass

    def _closed(self, ws: Any, lane: str, batch: list[str | bytes]) -> None:
        code = ws.close_code
        self.found.closes[f"{lane} {code}"] += 1
        if code not in (1000, 1002, 1003, 1007, 1008, 1009):
            self.found.abnormal_count += 1
            if len(self.found.abnormal) < 10:
                self.found.abnormal.append(
                    f"{lane}: close {code} {ws.close_reason!r} after {_batch_text(batch)}"
                )

    # -- before login -----------------------------------------------------------------

    async def before_login(self, lane: str, index: int) -> None:
        """One fresh connection per frame; each must be answered or closed in time."""
        from websockets.asyncio.client import connect
        from websockets.exceptions import ConnectionClosed, InvalidHandshake

        agent = hostile.ForgedAgent(self.pin)
        templates = self.templates()
        templates.agent_public_key = agent.public_key
        path = "/agent" if lane == "agent-pre" else "/api"
        source = (f"127.0.{20 + index}.{1 if lane == 'api-pre' else 2}", 0)
        while not self.done:
            try:
                ws = await asyncio.wait_for(
                    connect(
                        self.stack.url + path,
                        ssl=hostile.insecure_context(),
                        max_size=None,
                        local_addr=source,
                    ),
                    self.hang,
                )
            except (OSError, TimeoutError, InvalidHandshake) as exc:
                self.found.refused_logins[f"{lane} connect: {type(exc).__name__}"] += 1
                await asyncio.sleep(0.2)
                continue
            self.found.connections[lane] += 1
            frame: str | bytes = ""
            try:
                async with asyncio.timeout(self.hang):
                    hello = await ws.recv()
                    challenge = _challenge(hello)
                    templates.agent_signature = agent.sign(challenge)
                    frame = hostile.hostile_frame(lane, self.rng, templates)
                    await ws.send(frame)
                    self.found.sent[lane] += 1
                    await ws.recv()
            except TimeoutError:
                self.found.hung_count += 1
                if len(self.found.hung) < 5:
                    self.found.hung.append(
                        f"{lane}: neither answer nor close for {hostile.describe(frame)}"
                    )
            except ConnectionClosed:
                self._closed(ws, lane, [frame])
            finally:
                await ws.close()

    # -- silent -----------------------------------------------------------------------

    async def silent(self, count: int) -> tuple[int, int]:
        """Open ``count`` connections that never log in; how many the controller closed."""
        from websockets.asyncio.client import connect

        opened = []
        for n in range(count):
            path = "/agent" if n % 2 else "/api"
            ws = await connect(
                self.stack.url + path,
                ssl=hostile.insecure_context(),
                local_addr=(f"127.0.30.{n % 250 + 1}", 0),
            )
            opened.append(ws)
        await self.finished.wait()
        closed = sum(1 for ws in opened if ws.close_code is not None)
        for ws in opened:
            await ws.close()
        return count, closed


def _frame_id(frame: str | bytes) -> str:
    match = re.search(rb'"id": "([^"]{1,64})"', frame if isinstance(frame, bytes) else b"")
    if match:
        return match.group(1).decode("latin-1")
    text = frame if isinstance(frame, str) else ""
    found = re.search(r'"id": "([^"]{1,64})"', text)
    return found.group(1) if found else ""


def _batch_text(batch: list[str | bytes]) -> str:
    return " | ".join(hostile.describe(frame, 160) for frame in batch[-3:])


def _challenge(hello: str | bytes) -> str:
    import json

    return str(json.loads(hello)["challenge"])


# -- the log ----------------------------------------------------------------------------


def tracebacks(log: str) -> tuple[int, int, list[str]]:
    """Traceback count, never-retrieved task exceptions, and the distinct ones.

    Tracebacks are grouped by exception type and the innermost frame in our code; a chained
    traceback ("during handling of the above…") counts each of its parts.
    """
    count = log.count(hostile.LOG_FAILURES[0])
    never = log.count(hostile.LOG_FAILURES[1])
    distinct: Counter[tuple[str, str]] = Counter()
    example: dict[tuple[str, str], str] = {}
    lines = log.splitlines()
    for i, line in enumerate(lines):
        if not line.startswith(hostile.LOG_FAILURES[0]):
            continue
        where, error = "", ""
        for follow in lines[i + 1 : i + 400]:
            if follow.startswith("  File "):
                if "/site-packages/" not in follow and "/lib/python3" not in follow:
                    where = re.sub(r'File ".*?/((?:controller|protocol|agent)/)', r"\1", follow)
                    where = where.strip().replace('"', "")
            elif follow and not follow.startswith(" "):
                error = follow
                break
        key = (error.split(":")[0], where)
        distinct[key] += 1
        example.setdefault(key, error[:160].encode("unicode_escape").decode("ascii"))
    shown = [f"{n} x {example[key]} ({key[1]})" for key, n in distinct.most_common(15)]
    return count, never, shown


# -- the run ----------------------------------------------------------------------------


async def run_fuzz(fuzz: Fuzz, silent: int) -> tuple[float, int, int, int, int]:
    """Run every lane until the frame count is reached; seconds, silent, closed, peak RSS,
    RSS after the warm-up."""
    process = psutil.Process(fuzz.stack.controller.pid)  # type: ignore[union-attr]
    peak = warm = process.memory_info().rss
    warm_at = min(WARM_FRAMES, fuzz.target // 10)
    warmed = False
    started = time.perf_counter()
    lanes = [
        fuzz.logged_in(lane, n) if lane.endswith("post") else fuzz.before_login(lane, n)
        for lane, workers in LANE_WORKERS.items()
        for n in range(workers)
    ]
    silent_task = asyncio.create_task(fuzz.silent(silent))
    workers = asyncio.gather(*lanes)
    shown = started
    while not workers.done():
        await asyncio.wait({workers}, timeout=1.0)
        with suppress(psutil.Error):
            rss = process.memory_info().rss
            peak = max(peak, rss)
            if not warmed and fuzz.found.total >= warm_at:
                warm, warmed = rss, True
        if time.perf_counter() - shown >= 10:
            shown = time.perf_counter()
            found = fuzz.found
            by_lane = " ".join(f"{lane} {n:,}" for lane, n in sorted(found.sent.items()))
            print(
                f"  {found.total:,} frames ({found.total / (shown - started):,.0f}/s: {by_lane}),"
                f" hung {found.hung_count}, abnormal closes {found.abnormal_count},"
                f" internal {found.internal_count}, RSS {peak / 2**20:.0f} MiB",
                flush=True,
            )
        if fuzz.stack.controller is not None and fuzz.stack.controller.poll() is not None:
            print(f"  the controller exited ({fuzz.stack.controller.returncode})", flush=True)
            workers.cancel()
            with suppress(asyncio.CancelledError):
                await workers
            break
    if not workers.cancelled():
        await workers
    fuzz.finished.set()
    seconds = time.perf_counter() - started
    count, closed = await silent_task
    return seconds, count, closed, peak, warm


def setup(stack: h.Stack) -> tuple[str, str, str]:
    """A technician with an SSH key, a ticket; their key path, the pin and the ticket."""
    key = stack.tmp / "fuzz-tech"
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True, timeout=30
    )
    stack.cli("user", "add", "fuzz", "--key", f"{key}.pub", "--role", "technician", "--level", "L3")
    pin = str(stack.json("agent-config", "--out", str(stack.tmp / "agent.toml"))["pin"])
    ticket = str(stack.json("ticket", "open", "--title", "fuzz", "--customer", "fuzz")["id"])
    return str(key), pin, ticket


def still_works(stack: h.Stack) -> list[str]:
    """A real agent joins a fresh ticket and the CLI pings it; what failed, if anything."""
    problems: list[str] = []
    try:
        stack.join_agent()
        stack.cli("ping", stack.ticket)
    except (h.BenchError, subprocess.TimeoutExpired) as exc:
        problems.append(f"legitimate join or CLI call failed: {str(exc)[:400]}")
    return problems


def main() -> None:
    # a peer that writes after the controller closed is the point here, not news
    logging.getLogger("asyncio").setLevel(logging.ERROR)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--hang-seconds", type=float, default=15.0)
    parser.add_argument("--settle", type=float, default=15.0)
    parser.add_argument("--silent", type=int, default=20)
    parser.add_argument("--label", default="", help="a section of its own, e.g. before-fixes")
    parser.add_argument(
        "--seconds", type=float, default=0, help="stop sending after this long (0: no limit)"
    )
    parser.add_argument("--limit", type=int, default=7200, help="abort the whole run after this")
    parser.add_argument("--keep-log", type=Path, help="copy the controller's log here")
    args = parser.parse_args()
    h.install_deadline(args.limit)
    with h.temp_dir("helpline-fuzz-") as tmp:
        env = {
            **os.environ,
            "HELPLINE_HOME": str(tmp / "controller"),
            "HELPLINE_CLIENT_CONFIG": str(tmp / "client.toml"),
            # a crash in C (a stack overflow, say) still leaves its Python stack in the log
            "PYTHONFAULTHANDLER": "1",
        }
        env.pop("HELPLINE_DB", None)
        stack = h.Stack(tmp=tmp, port=h.free_port(), env=env)
        try:
            stack.cli("init", "--url", stack.url, "--home", str(stack.home))
            stack.start_controller()
            report(stack, args)
        finally:
            if args.keep_log:
                shutil.copyfile(tmp / "controller.log", args.keep_log)
            for process in (stack.agent, stack.controller):
                if process is not None:
                    h.stop_process(process)
            for log in stack.logs:
                log.close()


def report(stack: h.Stack, args: argparse.Namespace) -> None:
    from controller.api import METHODS

    key, pin, ticket = setup(stack)
    assert stack.controller is not None
    process = psutil.Process(stack.controller.pid)
    time.sleep(2)
    rss_start = process.memory_info().rss
    methods = (*sorted(METHODS), "no.such", "", "__init__", "ticket.show\n")
    fuzz = Fuzz(
        stack, args.frames, args.hang_seconds, random.Random(args.seed), key, pin, ticket, methods
    )
    if args.seconds:
        fuzz.stop_at = time.monotonic() + args.seconds
    print(f"fuzzing {stack.url} with {args.frames:,} frames (seed {args.seed})", flush=True)
    seconds, silent, silent_closed, peak, rss_warm = asyncio.run(run_fuzz(fuzz, args.silent))
    alive = stack.controller.poll() is None
    exit_text = "0" if alive else f"1 (exit status {stack.controller.returncode})"
    rss_end = process.memory_info().rss if alive else 0
    time.sleep(args.settle)
    rss_settled = process.memory_info().rss if alive else 0
    problems = still_works(stack) if alive else ["the controller exited"]
    log = (stack.tmp / "controller.log").read_text(errors="replace")
    count, never, distinct = tracebacks(log)
    found = fuzz.found
    growth = rss_settled / rss_warm - 1 if rss_warm else 0.0
    rate = found.total / seconds
    mib = 2**20
    rows = [
        ["hostile frames sent", f"{found.total:,}", "≥ 1,000,000", h.verdict(found.total >= 1e6)],
        ["frames/s", f"{rate:,.0f}", "", ""],
        ["controller exits", exit_text, "0", h.verdict(alive)],
        ["tracebacks in the log", f"{count:,}", "0", h.verdict(count == 0)],
        ["'Task exception was never retrieved'", f"{never:,}", "0", h.verdict(never == 0)],
        ["hung connections", f"{found.hung_count:,}", "0", h.verdict(found.hung_count == 0)],
        [
            "closes other than 1000/1002/1003/1007/1008/1009",
            f"{found.abnormal_count:,}",
            "0",
            h.verdict(found.abnormal_count == 0),
        ],
        [
            "`internal` replies",
            f"{found.internal_count:,}",
            "0",
            h.verdict(found.internal_count == 0),
        ],
        [
            "silent connections still open at the end",
            f"{silent - silent_closed} of {silent}",
            "0",
            h.verdict(silent == silent_closed),
        ],
        ["controller RSS at start", f"{rss_start / mib:.0f} MiB", "", ""],
        [
            f"controller RSS after the first {min(WARM_FRAMES, args.frames // 10):,} frames (warm)",
            f"{rss_warm / mib:.0f} MiB",
            "",
            "",
        ],
        ["controller RSS peak / at the end", f"{peak / mib:.0f} / {rss_end / mib:.0f} MiB", "", ""],
        [
            f"controller RSS after {args.settle:g} s settle",
            f"{rss_settled / mib:.0f} MiB ({growth:+.0%})",
            "within 10 % of warm",
            h.verdict(abs(growth) <= RSS_TARGET),
        ],
        [
            "legitimate join + CLI call afterwards",
            "ok" if not problems else "failed",
            "ok",
            h.verdict(not problems),
        ],
    ]
    lanes = ", ".join(f"{lane} {n:,}" for lane, n in sorted(found.sent.items()))
    conns = ", ".join(f"{lane} {n:,}" for lane, n in sorted(found.connections.items()))
    closes = ", ".join(f"{k}: {n:,}" for k, n in found.closes.most_common())
    refused = ", ".join(f"{k}: {n:,}" for k, n in found.refused_logins.most_common(6))
    oversized = ", ".join(f"{k} {n:,}" for k, n in sorted(found.oversized.items())) or "none"
    title = "Long fuzz: hostile frames on /agent and /api (`bench/fuzz.py`)"
    if args.label:
        title += f" — {args.label}"
    lines = [
        f"## {title}",
        "",
        *h.machine_lines(),
        f"- command: `{h.command_line()}`",
        f"- what: {found.total:,} hostile frames in {seconds:.0f} s against one real controller "
        f"(SQLite) on 127.0.0.1, TLS 1.3; {sum(LANE_WORKERS.values())} connections at a time "
        f"(reopened as the controller closes them) plus {silent} silent ones; every frame a "
        "valid message of protocol/messages.py with one mutation (tests/hostile.py); a probe "
        f"after every {BATCH} frames on a logged-in connection; hung = no answer and no close "
        f"within {args.hang_seconds:g} s.",
        f"- frames by lane: {lanes}",
        f"- connections by lane: {conns}",
        f"- closes: {closes}",
        f"- frames over the lane's limit (each ends its batch: the peer then reads the close): "
        f"{oversized}",
        *([f"- refused logins: {refused}"] if refused else []),
        "",
        *h.table(["figure", "value", "target", "verdict"], rows),
    ]
    details = [
        ("Distinct tracebacks (count x last exception at its innermost frame of ours)", distinct),
        ("`internal` replies, distinct (error ← the call that caused it)", found.internal),
        ("SQL in error texts", found.sql[:5]),
        ("Hung connections", found.hung),
        ("Abnormal closes", found.abnormal),
        ("Other problems", problems),
    ]
    for heading, items in details:
        if items:
            lines += ["", f"{heading}:", ""]
            lines += ["- `" + item.replace("`", "'") + "`" for item in items]
    body = "\n".join(lines)
    print(body)
    name = "fuzz" + (f"-{re.sub(r'[^a-z0-9]+', '-', args.label.lower())}" if args.label else "")
    h.update_results(name, body)


if __name__ == "__main__":
    main()
