"""Fixes that need root, for an agent that does not run as root.

The packaged agent runs as an unprivileged user. A fix marked ``needs_root`` (restart a
service, flush DNS, vacuum the journal…) goes, after the customer said yes, to the *root
helper*: a small root process reachable only through one Unix socket that only the
agent's group may open (``helpline-agent-root.socket``; systemd starts one helper per
connection). The helper trusts nothing the agent says about the fix. It:

1. checks the caller's credentials from the kernel (``SO_PEERCRED``): the agent's user;
2. reads the catalogue key and the unattended list from the root-owned agent config
   (``/etc/helpline-agent/agent.toml``), never from the request;
3. verifies the signed bundle again, refuses a rollback against its own root-owned serial,
   checks hash, platform, level, parameter schema and path roots (:func:`agent.fixes.prepare`);
4. runs only fixes marked ``needs_root`` (the agent runs the others itself), and only if the
   paths and processes still resolve to what the customer was shown;
5. runs the argv exactly as the agent would (:func:`agent.fixes.execute`: no shell, a
   scrubbed environment, its own process group, timeout, capped output) and streams it back;
6. kills the fix if the agent hangs up (the session ended), and logs every request and
   refusal to its standard error, which is the journal.

So the agent's user can choose among signed root fixes with valid parameters, and nothing
more. What it cannot prove to the helper is that the customer said yes: the consent is
the agent's (it is audited on the controller, and logged here).

Wire format: one JSON object per line. Agent → helper, once::

    {"proposal": {…fix_proposal…}, "consent": "customer", "values": {…}, "notes": {…}}

Helper → agent: ``{"stream": "stdout"|"stderr"|"status", "data": "…"}`` while it runs,
then exactly one ``{"result": {…FixReport…}}`` or ``{"refused": {"code": "…", "message": "…"}}``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import socket
import stat
import struct
import sys
from collections.abc import Awaitable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from agent.config import AgentConfig, ConfigError
from agent.fixes import (
    ROOT_HELPER_MAX_LINE,
    FixPolicy,
    Refused,
    execute,
    helper_line,
    prepare,
)
from protocol.calls.fixes import FixReport
from protocol.catalogue import Fix
from protocol.messages import FixProposal
from protocol.text import SafeLogFormatter

#: where the .deb's socket unit listens
DEFAULT_SOCKET: Final = "/run/helpline-agent-root.sock"
DEFAULT_CONFIG: Final = "/etc/helpline-agent/agent.toml"
DEFAULT_STATE: Final = "/var/lib/helpline-agent-root"
DEFAULT_USER: Final = "helpline-agent"
REQUEST_TIMEOUT: Final = 10.0
#: listen mode: fixes running at once (systemd's socket unit sets its own MaxConnections)
MAX_CONCURRENT: Final = 4
CONSENTS: Final = frozenset({"customer", "preapproved", "unattended"})

log = logging.getLogger("helpline-agent-root")


# -- the helper's side ---------------------------------------------------------------------


class SetupError(Exception):
    """The helper cannot serve safely; the message says what to fix."""


@dataclass(frozen=True)
class Settings:
    """What the helper trusts: all of it from root-owned files and its command line."""

    config: AgentConfig
    allowed_uids: frozenset[int]
    serial_file: Path


def _check_root_owned(path: Path) -> None:
    """``path`` and its directory must be root's and writable by nobody else."""
    for item in (path, path.parent):
        st = item.stat()
        if st.st_uid != 0 or st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            raise SetupError(
                f"{item} must be owned by root and writable only by root (it holds the key "
                f"that decides what runs as root); fix with: chown root {item} && "
                f"chmod go-w {item}"
            )


def load_settings(config_path: Path, users: list[str], state: Path) -> Settings:
    """Read the root-owned config and resolve the users allowed to ask."""
    import pwd

    try:
        _check_root_owned(config_path)
    except FileNotFoundError:
        raise SetupError(f"no agent config at {config_path}") from None
    try:
        config = AgentConfig.load(config_path)
    except ConfigError as exc:
        raise SetupError(str(exc)) from None
    if not config.fix_key:
        raise SetupError(f"{config_path} has no fix_key: there is no catalogue to run from")
    uids = set()
    for user in users:
        try:
            uids.add(int(user) if user.isdigit() else pwd.getpwnam(user).pw_uid)
        except KeyError:
            raise SetupError(f"no such user {user!r} (the agent's user)") from None
    if 0 in uids:
        raise SetupError("root needs no helper: allow the agent's own user")
    state.mkdir(mode=0o700, parents=True, exist_ok=True)
    _check_root_owned(state / ".")
    return Settings(config, frozenset(uids), state / "catalogue-serial")


def peer_credentials(sock: socket.socket) -> tuple[int, int, int]:
    """(pid, uid, gid) of the process at the other end, as the kernel knows them."""
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid, uid, gid = struct.unpack("3i", raw)
    return pid, uid, gid


async def _never_asks(_question: object) -> bool:
    return False  # the helper never asks anyone: consent came with the request


def check_request(
    raw: bytes, settings: Settings
) -> tuple[FixProposal, str, Fix, dict[str, str], int]:
    """Everything before the fix runs; raises :class:`Refused`."""
    try:
        request = json.loads(raw)
        proposal = FixProposal.model_validate(request["proposal"])
        consent = request["consent"]
        shown_values = request.get("values", {})
        shown_notes = request.get("notes", {})
    except (ValueError, KeyError, TypeError) as exc:
        raise Refused("bad_request", f"not a fix request: {str(exc)[:200]}") from None
    if consent not in CONSENTS:
        raise Refused("bad_request", f"unknown consent {consent!r}")
    policy = FixPolicy(
        pinned_key=settings.config.fix_key,
        ask=_never_asks,
        unattended=frozenset(settings.config.unattended),
        serial_file=settings.serial_file,
    )
    fix, serial, values, notes = prepare(proposal, policy)
    if not fix.needs_root:
        raise Refused("not_root", f"fix {fix.id} does not need root: the agent runs it itself")
    if consent == "unattended" and fix.id not in policy.unattended:
        raise Refused(
            "consent", f"fix {fix.id} is not unattended in the root-owned config; ask the customer"
        )
    if values != shown_values or notes != shown_notes:
        raise Refused(
            "changed",
            f"what fix {fix.id} would act on differs from what the customer was shown",
        )
    return proposal, consent, fix, values, serial


async def serve(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    settings: Settings,
) -> None:
    """One connection: one request, one fix, one answer."""
    sock = writer.get_extra_info("socket")
    pid, uid, _gid = peer_credentials(sock)
    who = f"pid {pid} uid {uid}"

    async def send(obj: dict[str, Any]) -> None:
        writer.write(helper_line(obj))
        await writer.drain()

    try:
        if uid not in settings.allowed_uids:
            log.warning("refused %s: not the agent's user", who)
            await send({"refused": {"code": "not_agent", "message": "only the agent may ask"}})
            return
        try:
            async with asyncio.timeout(REQUEST_TIMEOUT):
                raw = await reader.readline()
            proposal, consent, fix, values, serial = check_request(raw, settings)
        except (TimeoutError, ValueError, asyncio.LimitOverrunError):
            log.warning("refused %s: no complete request", who)
            await send({"refused": {"code": "bad_request", "message": "no complete request"}})
            return
        except Refused as refused:
            log.warning("refused %s: %s: %s", who, refused.code, refused.message)
            await send({"refused": {"code": refused.code, "message": refused.message}})
            return
        log.info(
            "running %s (catalogue serial %d) for %s: ticket %s, technician %s, consent %s, "
            "params %s",
            fix.id,
            serial,
            who,
            proposal.ticket.id,
            proposal.technician.name,
            consent,
            json.dumps(values, sort_keys=True),
        )

        async def emit(stream: str, data: str) -> None:
            await send({"stream": stream, "data": data})

        outcome = await _run_unless_hung_up(reader, execute(fix, values, emit))
        if outcome is None:
            log.warning("%s for %s: the agent hung up; the fix was stopped", fix.id, who)
            return
        log.info("%s for %s: %s (exit %s)", fix.id, who, outcome.status, outcome.exit_code)
        await send({"result": outcome.data()})
    except ConnectionError:
        log.warning("%s hung up", who)
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()


async def _run_unless_hung_up(
    reader: asyncio.StreamReader, work: Awaitable[FixReport]
) -> FixReport | None:
    """Run ``work``; cancel it (which kills the fix's group) if the agent closes the socket."""

    async def hang_up() -> None:
        # the agent sends nothing after its request: reading returns only at the end
        while await reader.read(4096):
            pass

    running = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(hang_up())
    try:
        await asyncio.wait({running, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
        if not running.done():
            running.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await running
    return None if running.cancelled() else running.result()


async def serve_inetd(settings: Settings) -> None:
    """systemd ``Accept=yes``: the connection is standard input."""
    sock = socket.socket(fileno=os.dup(0))
    os.close(0)
    os.open(os.devnull, os.O_RDONLY)  # fd 0 again, so nothing else reads the socket
    reader, writer = await asyncio.open_unix_connection(sock=sock, limit=ROOT_HELPER_MAX_LINE)
    await serve(reader, writer, settings)


async def serve_listening(settings: Settings, path: str, group: int) -> None:
    """Without systemd: listen on ``path`` (0660, root:``group``) and serve each connection."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    slots = asyncio.Semaphore(MAX_CONCURRENT)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        async with slots:
            await serve(reader, writer, settings)

    old_umask = os.umask(0o177)  # never a moment in which others could connect
    try:
        server = await asyncio.start_unix_server(handle, path=path, limit=ROOT_HELPER_MAX_LINE)
    finally:
        os.umask(old_umask)
    os.chown(path, 0, group)
    os.chmod(path, 0o660)
    log.info("listening on %s for uid %s", path, sorted(settings.allowed_uids))
    async with server:
        await server.serve_forever()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="helpline-agent-root",
        description="Run signed fixes that need root, for the helpline agent only.",
    )
    parser.add_argument("--config", type=Path, default=Path(DEFAULT_CONFIG))
    parser.add_argument(
        "--allow-user",
        action="append",
        metavar="USER",
        help=f"the agent's user (name or uid); default {DEFAULT_USER}",
    )
    parser.add_argument("--state", type=Path, default=Path(DEFAULT_STATE))
    parser.add_argument(
        "--socket-group",
        type=int,
        metavar="GID",
        help="listen mode: the socket's group (default: the first allowed user's group)",
    )
    parser.add_argument(
        "--listen",
        type=Path,
        metavar="SOCKET",
        help="listen here (without systemd); default: serve the connection on stdin",
    )
    args = parser.parse_args(argv)
    # refusals quote what the agent's user sent (paths, messages): escaped, one line each
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(SafeLogFormatter("%(message)s"))
    logging.basicConfig(level=logging.INFO, handlers=[handler])
    if not sys.platform.startswith("linux"):
        log.error("the root helper runs on Linux only")
        return 2
    if os.geteuid() != 0:
        log.error("the root helper must run as root (it exists to run fixes that need root)")
        return 2
    users = args.allow_user or [DEFAULT_USER]
    try:
        settings = load_settings(args.config, users, args.state)
    except SetupError as exc:
        log.error("%s", exc)
        return 2
    if args.listen is None:
        asyncio.run(serve_inetd(settings))
        return 0
    group = args.socket_group
    if group is None:
        import pwd

        first = users[0]
        try:
            entry = pwd.getpwuid(int(first)) if first.isdigit() else pwd.getpwnam(first)
        except KeyError:
            log.error("%s has no passwd entry: give --socket-group", first)
            return 2
        group = entry.pw_gid
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve_listening(settings, str(args.listen), group))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
