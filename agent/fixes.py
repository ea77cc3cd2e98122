"""Running an approved fix on the customer's machine, and every check before it.

In order, and any failure refuses with a code the controller audits:

1. the bundle's signature verifies with the key pinned in the agent config;
2. the bundle is not older than one this agent already ran from (no rollback);
3. the fix is in the bundle and matches its signed hash;
4. the fix is for this platform and the technician's level allows it;
5. every parameter passes the fix's schema; paths resolve under the allowed roots;
6. the customer says yes — unless they pre-approved this fix at join (``--allow``) or
   the agent config lists it as unattended;
7. then: argv only, no shell, a scrubbed environment, a new process group killed whole at
   the timeout, output streamed and capped.

An agent that does not run as root hands a fix marked ``needs_root`` to the root helper
(:mod:`agent.rootfix`) after step 6, if its config names one; the helper checks 1 to 5
again itself before step 7.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from protocol import catalogue
from protocol.calls.fixes import FixReport, Truncated
from protocol.catalogue import CatalogueError, Fix, PathParam, PidParam, SignedBundle
from protocol.messages import FixProposal

OUTPUT_CAP: Final = 64 * 1024
CHUNK: Final = 4096
#: the whole environment a fix gets: nothing of the agent's own leaks into it
CLEAN_ENV: Final = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "LANG": "C.UTF-8",
    "LC_ALL": "C.UTF-8",
}
PLATFORM: Final = {"linux": "linux", "darwin": "darwin", "win32": "windows"}.get(
    sys.platform, sys.platform
)
#: the root helper's frames: a request carries the whole signed catalogue; output frames
#: are at most a few KiB
ROOT_HELPER_MAX_LINE: Final = 4 * 1024 * 1024


@dataclass(frozen=True)
class FixQuestion:
    """What the customer is asked before a fix runs."""

    fix: Fix
    values: dict[str, str]
    notes: dict[str, str]
    technician: str
    level: str | None
    ticket: str
    ticket_title: str


Ask = Callable[[FixQuestion], Awaitable[bool]]
Emit = Callable[[str, str], Awaitable[None]]


@dataclass
class FixPolicy:
    """What this agent trusts and what the customer allowed in advance."""

    pinned_key: str | None
    ask: Ask
    preapproved: frozenset[str] = frozenset()
    unattended: frozenset[str] = frozenset()
    serial_file: Path | None = None
    #: the root helper's socket: where fixes that need root go when this agent is not root
    root_helper: str | None = None
    notes: list[str] = field(default_factory=list)


#: a refusal's message goes into ``Result.error`` (at most 2,000 characters) and is shown
#: to the customer; parameters in it (a path, say) come from the controller and can be long
MESSAGE_LIMIT = 1000


def clip(text: str, limit: int = MESSAGE_LIMIT) -> str:
    """``text`` cut to ``limit`` characters in the middle (the end often says why)."""
    if len(text) <= limit:
        return text
    note = f" …({len(text):,} characters, clipped)… "
    head = (limit - len(note)) // 2
    tail = limit - len(note) - head
    return text[:head] + note + text[len(text) - tail :]


class Refused(Exception):
    """The agent will not run a fix; ``message`` is clipped so a refusal can always be sent."""

    def __init__(self, code: str, message: str) -> None:
        message = clip(message)
        super().__init__(message)
        self.code = clip(code, 64)
        self.message = message


def _check_serial(policy: FixPolicy, serial: int) -> None:
    path = policy.serial_file
    if path is None:
        return
    try:
        seen = int(path.read_text().strip() or 0)
    except (FileNotFoundError, ValueError):
        seen = 0
    if serial < seen:
        raise Refused(
            "bundle_rollback",
            f"the catalogue offered (serial {serial}) is older than one already used here "
            f"({seen}); refusing a rollback",
        )
    if serial > seen:
        path.write_text(f"{serial}\n")


def resolve_path(name: str, spec: PathParam, value: str) -> str:
    """The real path of ``value``, which must lie under one of the allowed roots."""
    real = os.path.realpath(value)
    for root in spec.roots:
        real_root = os.path.realpath(root)
        if real == real_root or real.startswith(real_root.rstrip("/") + "/"):
            if not os.path.exists(real):
                raise Refused("bad_param", f"{name}: {value} does not exist")
            return real
    raise Refused(
        "bad_param", f"{name}: {value} resolves to {real}, outside {', '.join(spec.roots)}"
    )


def describe_pid(pid: int) -> str:
    """What a process is, so the customer knows what would be stopped."""
    import psutil

    try:
        process = psutil.Process(pid)
        with process.oneshot():
            command = " ".join(process.cmdline())[:200] or process.name()
            return f"pid {pid}: {command} (user {process.username()})"
    except psutil.NoSuchProcess:
        raise Refused("bad_param", f"there is no process {pid}") from None
    except psutil.AccessDenied:
        return f"pid {pid}: (details not readable)"


def prepare(
    proposal: FixProposal, policy: FixPolicy
) -> tuple[Fix, int, dict[str, str], dict[str, str]]:
    """Every check that needs no answer from the customer (steps 1 to 5)."""
    if not policy.pinned_key:
        raise Refused(
            "no_fix_key", "this agent has no catalogue key configured, so it runs no fixes"
        )
    try:
        signed = SignedBundle.model_validate(proposal.bundle)
        bundle = catalogue.open_bundle(signed, catalogue.public_key(policy.pinned_key))
        fix = bundle.find(proposal.fix_id)
        _check_serial(policy, bundle.serial)
        if PLATFORM not in fix.platforms:
            raise Refused("platform", f"fix {fix.id} is not made for {PLATFORM}")
        if not catalogue.level_allows(proposal.technician.level, fix):
            raise Refused(
                "level",
                f"fix {fix.id} needs a {fix.min_level} technician; "
                f"{proposal.technician.name} is {proposal.technician.level or 'not a technician'}",
            )
        values = catalogue.validate_params(fix, proposal.params)
    except CatalogueError as exc:
        raise Refused(exc.code, exc.reason) from None
    except ValueError as exc:  # a malformed bundle envelope
        raise Refused("bundle_invalid", str(exc)[:500]) from None
    notes: dict[str, str] = {}
    for name, spec in fix.params.items():
        if isinstance(spec, PathParam):
            values[name] = resolve_path(name, spec, values[name])
        elif isinstance(spec, PidParam):
            notes[name] = describe_pid(int(values[name]))
    if _needs_helper(fix) and policy.root_helper is None:
        raise Refused(
            "needs_root",
            f"fix {fix.id} needs root, this agent does not run as root and its config names "
            "no root_helper (docs/fixes.md: fixes that need root)",
        )
    return fix, bundle.serial, values, notes


def _needs_helper(fix: Fix) -> bool:
    return fix.needs_root and hasattr(os, "geteuid") and os.geteuid() != 0


async def run(proposal: FixProposal, policy: FixPolicy, emit: Emit) -> FixReport:
    """Check, ask, run; returns the report (raises :class:`Refused` before running)."""
    fix, serial, values, notes = prepare(proposal, policy)
    if fix.id in policy.unattended:
        consent = "unattended"
    elif fix.id in policy.preapproved:
        consent = "preapproved"
    else:
        question = FixQuestion(
            fix,
            values,
            notes,
            proposal.technician.name,
            proposal.technician.level,
            proposal.ticket.id,
            proposal.ticket.title,
        )
        if not await policy.ask(question):
            raise Refused("declined", "the customer declined this fix")
        consent = "customer"
    # the customer may have taken minutes to answer: check paths and pids again, and run
    # only if they still mean what was shown
    _recheck(fix, values, notes)
    if _needs_helper(fix):
        assert policy.root_helper is not None  # prepare() refused otherwise
        await emit("status", f"asking the root helper to run {fix.id} ({consent})")
        outcome = await run_as_root(
            policy.root_helper, proposal, consent=consent, values=values, notes=notes, emit=emit
        )
        privileged: str | None = "root helper"
    else:
        await emit("status", f"running {fix.id} ({consent})")
        outcome = await execute(fix, values, emit)
        privileged = None
    # what the agent knows itself, never what the helper says about it
    return outcome.model_copy(
        update={
            "fix": fix.id,
            "title": fix.title,
            "sha256": fix.content_hash(),
            "bundle_serial": serial,
            "params": values,
            "consent": consent,
            "targets": fix.targets,
            "privileged": privileged,
        }
    )


def _recheck(fix: Fix, values: dict[str, str], notes: dict[str, str]) -> None:
    for name, spec in fix.params.items():
        if isinstance(spec, PathParam) and resolve_path(name, spec, values[name]) != values[name]:
            raise Refused("bad_param", f"{name}: {values[name]} changed while you were asked")
        if isinstance(spec, PidParam) and describe_pid(int(values[name])) != notes.get(name):
            raise Refused("bad_param", f"process {values[name]} changed while you were asked")


async def execute(fix: Fix, values: dict[str, str], emit: Emit) -> FixReport:
    """Run the fix's argv in its own process group; stream and cap its output."""
    with tempfile.TemporaryDirectory(prefix="helpline-fix-") as workdir:
        argv_values = dict(values, python=sys.executable)
        if fix.script is not None:
            script = Path(workdir) / fix.script.name
            script.write_text(fix.script.content)
            script.chmod(0o500)
            argv_values["script"] = str(script)
        argv = catalogue.build_argv(fix.command, argv_values)
        started = time.monotonic()
        try:
            process = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env=dict(CLEAN_ENV, HOME=workdir, TMPDIR=workdir),
                cwd=workdir,
                start_new_session=True,  # its own process group, killed whole
            )
        except OSError as exc:
            return FixReport(
                fix=fix.id,
                status="failed",
                exit_code=None,
                error=f"cannot start: {exc}",
                argv=tuple(argv),
                duration_ms=0.0,
                stdout="",
                stderr="",
                truncated=Truncated(),
                timed_out=False,
            )
        assert process.stdout is not None and process.stderr is not None
        captured = {"stdout": bytearray(), "stderr": bytearray()}
        truncated = {"stdout": False, "stderr": False}

        async def pump(name: str, stream: asyncio.StreamReader) -> None:
            while chunk := await stream.read(CHUNK):
                kept = captured[name]
                room = OUTPUT_CAP - len(kept)
                if room > 0:
                    piece = chunk[:room]
                    kept += piece
                    await emit(name, piece.decode("utf-8", "replace"))
                if len(chunk) > room and not truncated[name]:
                    truncated[name] = True
                    await emit(name, f"\n[… {name} truncated after {OUTPUT_CAP} bytes …]\n")
                # past the cap we keep reading, so the fix never blocks on a full pipe

        pumps = asyncio.gather(pump("stdout", process.stdout), pump("stderr", process.stderr))
        timed_out = False
        try:
            async with asyncio.timeout(fix.timeout):
                # returncode is set as soon as the fix itself exits; wait() would also wait
                # for every pipe to close, which a child left in the background holds open
                while process.returncode is None:  # noqa: ASYNC110
                    await asyncio.sleep(0.05)
        except TimeoutError:
            timed_out = True
            await asyncio.shield(_kill_group(process))
        except BaseException:
            # the session ended (task cancelled) or the agent is going down: nothing the
            # customer allowed may outlive the session
            await asyncio.shield(_kill_group(process))
            raise
        finally:
            # children the fix left behind in its group go with it, even after exit 0
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGKILL)
        # bounded: a descendant that left the group with setsid() could hold a pipe forever
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(process.wait(), 5)
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(pumps, 5)
        duration = (time.monotonic() - started) * 1000
    status = "timed_out" if timed_out else ("succeeded" if process.returncode == 0 else "failed")
    await emit("status", f"{status} (exit {process.returncode}, {duration:.0f} ms)")
    return FixReport(
        fix=fix.id,
        status=status,
        exit_code=process.returncode,
        argv=tuple(argv),
        duration_ms=round(duration, 1),
        timed_out=timed_out,
        stdout=_text(captured["stdout"], truncated["stdout"]),
        stderr=_text(captured["stderr"], truncated["stderr"]),
        truncated=Truncated(**truncated),
    )


def _text(data: bytearray, truncated: bool) -> str:
    text = data.decode("utf-8", "replace")
    return text + (f"\n[… truncated after {OUTPUT_CAP} bytes …]" if truncated else "")


async def _kill_group(process: asyncio.subprocess.Process) -> None:
    """SIGTERM the fix's whole process group, give it 2 s, then SIGKILL the group."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(process.wait(), 2)
    # children that ignored SIGTERM (or outlived the leader) go too
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    await process.wait()


# -- the root helper's client ---------------------------------------------------------------


def helper_line(obj: dict[str, Any]) -> bytes:
    """One frame to or from the root helper: a JSON object on one line."""
    return json.dumps(obj, separators=(",", ":")).encode() + b"\n"


async def run_as_root(
    socket_path: str,
    proposal: FixProposal,
    *,
    consent: str,
    values: dict[str, str],
    notes: dict[str, str],
    emit: Emit,
) -> FixReport:
    """Have the root helper (:mod:`agent.rootfix`) run ``proposal``; returns what
    :func:`execute` returns.

    Raises :class:`Refused` when the helper is missing, refuses or breaks off. Cancelling
    the caller closes the connection, and the helper then kills the fix.
    """
    try:
        reader, writer = await asyncio.open_unix_connection(socket_path, limit=ROOT_HELPER_MAX_LINE)
    except (FileNotFoundError, ConnectionRefusedError):
        raise Refused(
            "root_helper_unavailable",
            f"this fix needs root and the root helper is not listening on {socket_path} "
            "(on Debian: sudo systemctl enable --now helpline-agent-root.socket)",
        ) from None
    except PermissionError:
        raise Refused(
            "root_helper_denied",
            f"this agent's user may not open {socket_path}: it must be the agent user the "
            "helper was set up for",
        ) from None
    try:
        request = {
            "proposal": proposal.model_dump(mode="json"),
            "consent": consent,
            "values": values,
            "notes": notes,
        }
        writer.write(helper_line(request))
        await writer.drain()
        while line := await reader.readline():
            frame = json.loads(line)
            if "stream" in frame:
                await emit(str(frame["stream"]), str(frame["data"]))
            elif "result" in frame:
                return FixReport.model_validate(frame["result"])
            elif "refused" in frame:
                refused = frame["refused"]
                raise Refused(str(refused["code"]), f"root helper: {refused['message']}")
        raise Refused("root_helper_failed", "the root helper hung up without a result")
    except (ValueError, KeyError, TypeError, asyncio.LimitOverrunError) as exc:
        raise Refused("root_helper_failed", f"the root helper sent a bad frame: {exc}") from None
    except ConnectionError as exc:
        raise Refused("root_helper_failed", f"the root helper hung up: {exc}") from None
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()
