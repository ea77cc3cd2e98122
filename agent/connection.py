"""The agent's connection driver: dial out, pin, authenticate, serve requests, reconnect.

The conversation itself is :class:`protocol.session.AgentSession`; this module only moves
frames, asks the customer, runs collectors, and keeps results in the outbox until the
controller acknowledges them, so a reply produced while disconnected is delivered after
the reconnect, once.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import platform
import signal
import socket
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, Literal

from agent import __version__
from agent.config import AgentConfig
from agent.state import AgentHome
from protocol import codec, signing
from protocol.errors import ProtocolError
from protocol.machine import Ended, Refused
from protocol.messages import (
    AgentInfo,
    ConsentRequest,
    DiagRequest,
    FixOutput,
    FixProposal,
    Ping,
    Rating,
    Refusal,
    Result,
    SessionStarted,
)
from protocol.session import (
    Acknowledged,
    AgentSession,
    AgentState,
    ConsentNeeded,
    RequestReceived,
    SessionLive,
)
from protocol.signing import PinMismatch
from protocol.text import one_line
from transport.tls import pinned_client_context, pinned_connection

HEARTBEAT_SECONDS = float(os.environ.get("HELPLINE_HEARTBEAT", "20"))
BACKOFF_BASE = float(os.environ.get("HELPLINE_BACKOFF_BASE", "0.5"))
BACKOFF_MAX = float(os.environ.get("HELPLINE_BACKOFF_MAX", "30"))

# exit statuses of `helpline-agent` (README: exit codes)
EXIT_OK = 0
EXIT_REFUSED = 4
EXIT_UNREACHABLE = 5
EXIT_DECLINED = 6

STOPPED = "agent stopped; the session stays open (`helpline-agent resume` continues it)"


class Outcome(Exception):
    """The run is over, with an exit status and a message for the customer."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class Dropped(Exception):
    """The connection failed or fell; worth a reconnect if a session is live."""


#: the customer's answer to a join: "granted", or why not (protocol.messages.Refusal)
ConsentReply = Literal["granted", "declined", "timed_out", "no_input"]
Consent = Callable[[ConsentRequest], Awaitable[ConsentReply]]
Ask = Callable[[Any], Awaitable[bool]]  # agent.fixes.FixQuestion -> yes/no
Say = Callable[[str], None]
Rate = Callable[[], Awaitable[Rating | None]]  # ask the customer for a rating, or None


class AgentRunner:
    """One agent run: a join with a code, or a resume of the session in the state dir."""

    def __init__(
        self,
        config: AgentConfig,
        home: AgentHome,
        *,
        code: str | None,
        consent: Consent,
        say: Say,
        ask_fix: Ask | None = None,
        allow: tuple[str, ...] = (),
        rate: Rate | None = None,
    ) -> None:
        self.config = config
        self.rate = rate
        #: Ctrl-C here means the customer is at this terminal and can be asked for a
        #: rating; SIGTERM (`helpline-agent leave`, a service stop) means they are not
        self.rate_on_leave = False
        self.home = home
        self.code = code
        self.consent = consent
        self.say = say
        self.allow = allow
        self.ask_fix = ask_fix or _never
        self._fix_policy: Any = None  # built on the first proposal: fixes import lazily
        self.key = home.load_or_create_key()
        self.public_key = signing.public_key_text(self.key)
        self.session: SessionStarted | None = None
        self.resume_expires: datetime | None = None  # grant end saved with the session
        self.machine: AgentSession | None = None
        self.ws: Any = None
        self.leave = asyncio.Event()
        # SIGHUP (the service's stop signal): disconnect but keep the session to resume.
        self.stop = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self.diag_delay = float(os.environ.get("HELPLINE_TEST_DIAG_DELAY", "0"))

    # -- the run --------------------------------------------------------------------

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGINT, self._interrupted)
        loop.add_signal_handler(signal.SIGTERM, self.leave.set)
        if hasattr(signal, "SIGHUP"):
            loop.add_signal_handler(signal.SIGHUP, self.stop.set)
        self.home.write_pid()
        try:
            if self.code is None:
                saved = self.home.load_session()
                if not saved:
                    raise Outcome(EXIT_REFUSED, "no session to resume here: join with a code")
                self.resume_id: str | None = str(saved["session_id"])
                self.resume_expires = _saved_expiry(saved)
            else:
                self.resume_id = None
            try:
                await self._connect_once()
            except Dropped as exc:
                # A resume (the service after a reboot, say) keeps trying while the saved
                # grant lasts: the network may simply not be up yet.
                if self.session is None and self.resume_expires is None:
                    raise Outcome(EXIT_UNREACHABLE, str(exc)) from None
                self.say(str(exc))
                await self._reconnect_loop()
            raise Outcome(EXIT_OK, "session ended")
        except Outcome as outcome:
            self.say(outcome.message)
            return outcome.status
        finally:
            for task in self._tasks:
                task.cancel()
            self.home.clear_pid()

    def _interrupted(self) -> None:
        self.rate_on_leave = True
        self.leave.set()

    async def _rate(self, machine: AgentSession) -> None:
        """Ask the leaving customer for a rating (skipped when they are not at a terminal)."""
        if self.rate is None or not self.rate_on_leave or machine.state is not AgentState.LIVE:
            return
        rating = await self.rate()
        if rating is not None and machine.state is AgentState.LIVE:
            machine.rate(rating)

    async def _rate_after_end(self, machine: AgentSession) -> None:
        """The controller ended the session and invited a rating: ask, answer, close.

        Without a terminal (the service, ``--yes``) nobody is asked and the agent closes
        at once with ``end``.
        """
        from websockets.exceptions import ConnectionClosed

        rating = await self.rate() if self.rate is not None else None
        if machine.state is AgentState.RATING:
            if rating is not None:
                machine.rate(rating)
            else:
                machine.end("no rating")
        with contextlib.suppress(ConnectionClosed, OSError):
            await self._flush()
            if self.ws is not None:
                await self.ws.close()

    async def _reconnect_loop(self) -> None:
        """Reconnect with exponential backoff and full jitter until the session ends."""
        from tenacity import AsyncRetrying, retry_if_exception_type, wait_random_exponential

        while True:
            self.say("connection lost; reconnecting…")
            retrying = AsyncRetrying(
                wait=wait_random_exponential(multiplier=BACKOFF_BASE, max=BACKOFF_MAX),
                retry=retry_if_exception_type(Dropped),
                before_sleep=lambda _state: self._check_expiry(),
                sleep=self._pause,
                reraise=True,
            )
            try:
                async for attempt in retrying:
                    with attempt:
                        await self._connect_once()
                return
            except Dropped:
                continue

    async def _pause(self, seconds: float) -> None:
        """Wait between reconnects; leaving or stopping cuts the wait short."""
        waits = {asyncio.ensure_future(self.leave.wait()), asyncio.ensure_future(self.stop.wait())}
        try:
            await asyncio.wait(waits, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for wait in waits:
                wait.cancel()

    def _check_expiry(self) -> None:
        if self.stop.is_set() and not self.leave.is_set():
            raise Outcome(EXIT_OK, STOPPED)
        if self.leave.is_set():
            self.home.clear_session()
            raise Outcome(EXIT_OK, "session ended by the customer")
        expires = self.session.expires_at if self.session is not None else self.resume_expires
        if expires is not None and datetime.now(UTC) >= expires:
            self.home.clear_session()
            raise Outcome(EXIT_OK, "the grant has expired; session ended")

    # -- one connection -------------------------------------------------------------

    async def _connect_once(self) -> None:
        """Run one connection to its end; return when the session is over for good."""
        from websockets.asyncio.client import connect
        from websockets.exceptions import ConnectionClosed, InvalidHandshake

        self._check_expiry()
        try:
            ws = await connect(
                self.config.url + "/agent",
                ssl=pinned_client_context(),
                max_size=codec.AGENT_MAX_FRAME,
                open_timeout=10,
                ping_interval=HEARTBEAT_SECONDS,
                ping_timeout=HEARTBEAT_SECONDS,
                close_timeout=2,
                # frames are small JSON: compression would cost CPU and a zlib context per
                # connection for next to no bytes saved
                compression=None,
                # the pin is checked as soon as TLS is up, before the HTTP upgrade
                create_connection=pinned_connection(self.config.pin),
            )
        except PinMismatch as exc:
            # Fatal, on a join and on a resume alike: the pin comes from the config and
            # does not change, so redialling cannot help (the service unit does not
            # restart on exit 5). The saved session stays for a later `resume`.
            raise Outcome(EXIT_UNREACHABLE, str(exc)) from None
        except (OSError, TimeoutError, InvalidHandshake) as exc:
            raise Dropped(f"cannot reach the controller at {self.config.url}: {exc}") from None
        machine = AgentSession(
            public_key=self.public_key,
            sign=lambda challenge: signing.sign_agent(self.key, challenge, self.config.pin),
            agent=AgentInfo(
                hostname=socket.gethostname(),
                platform=platform.platform(),
                agent_version=__version__,
            ),
            code=self.code if self.resume_id is None else None,
            session_id=self.resume_id,
        )
        self.ws, self.machine = ws, machine
        reader = asyncio.create_task(self._read(ws, machine))
        leave = asyncio.create_task(self.leave.wait())
        stop = asyncio.create_task(self.stop.wait())
        try:
            done, _ = await asyncio.wait({reader, leave, stop}, return_when=asyncio.FIRST_COMPLETED)
            if stop in done and leave not in done:
                reader.cancel()
                with contextlib.suppress(ConnectionClosed, OSError):
                    await ws.close(1001, "agent stopping")
                raise Outcome(EXIT_OK, STOPPED)
            if leave in done:
                reader.cancel()
                await self._rate(machine)
                machine.end("the customer ended the session")
                with contextlib.suppress(ConnectionClosed, OSError):
                    await self._flush()
                    await ws.close()
                self.home.clear_session()
                raise Outcome(EXIT_OK, "session ended: you left")
            reader.result()
        except ConnectionClosed as exc:
            if machine.finished:
                return
            raise Dropped(f"connection closed: {exc}") from None
        finally:
            leave.cancel()
            stop.cancel()
            self.ws = None

    async def _read(self, ws: Any, machine: AgentSession) -> None:
        async for frame in ws:
            try:
                events = machine.receive(codec.decode(frame))
            except ProtocolError as exc:
                await self._flush()
                await ws.close()
                raise Outcome(1, f"protocol error from the controller: {exc.reason}") from None
            for event in events:
                await self._on_event(event)
            await self._flush()
            if machine.finished:
                await ws.close()
                return
        if not machine.finished:
            from websockets.exceptions import ConnectionClosedError

            raise ConnectionClosedError(None, None)

    async def _flush(self) -> None:
        if self.machine is None or self.ws is None:
            return
        for message in self.machine.data_to_send():
            await self.ws.send(codec.encode(message))

    async def _on_event(self, event: object) -> None:
        assert self.machine is not None
        if isinstance(event, ConsentNeeded):
            reply = await self.consent(event.request)
            granted = reply == "granted"
            refusal: Refusal | None = None if reply == "granted" else reply
            self.machine.answer_consent(granted, self.allow, self.config.unattended, refusal)
            if not granted:
                await self._flush()
                raise Outcome(EXIT_DECLINED, "you declined; no session was started")
        elif isinstance(event, SessionLive):
            await self._on_live(event.started)
        elif isinstance(event, RequestReceived):
            self._serve(event.request)
        elif isinstance(event, Acknowledged):
            self.home.outbox_remove(event.request_id)
        elif isinstance(event, Refused):
            if self.resume_id is not None and event.code in (
                "session_ended",
                "grant_expired",
                "session_unknown",
            ):
                self.home.clear_session()
            raise Outcome(EXIT_REFUSED, f"the controller refused: {one_line(event.message, 300)}")
        elif isinstance(event, Ended):
            self.home.clear_session()
            # consent ends with the session: nothing the customer allowed runs on while
            # they are asked for a rating
            for task in self._tasks:
                task.cancel()
            # the technician's reason: one line, so it cannot pose as our own messages
            reason = one_line(event.reason, 300)
            if event.rating_invited:
                self.say(f"session ended: {reason}")
                await self._rate_after_end(self.machine)
                raise Outcome(EXIT_OK, "goodbye")
            raise Outcome(EXIT_OK, f"session ended: {reason}")

    async def _on_live(self, started: SessionStarted) -> None:
        first = self.session is None
        self.session = started
        self.resume_id = started.session_id
        self.home.save_session(
            {
                "session_id": started.session_id,
                "ticket": started.ticket.id,
                "expires_at": started.expires_at.isoformat(),
                "url": self.config.url,
            }
        )
        if first:
            self.say(
                f"session {one_line(started.session_id, 64)} is live for "
                f"{one_line(started.ticket.id, 32)} ({', '.join(started.scopes)}) "
                f"until {started.expires_at:%H:%M} UTC.\n"
                "Press Ctrl-C, or run `helpline-agent leave`, to end it at any time."
            )
        else:
            self.say(f"reconnected; session {one_line(started.session_id, 64)} resumed")
        for _request_id, frame in self.home.outbox_pending():
            message = codec.decode(frame)
            if isinstance(message, Result):
                self.machine_reply(message)

    def machine_reply(self, result: Result) -> None:
        if self.machine is not None and self.machine.state is AgentState.LIVE:
            self.machine.reply(result)

    def _serve(self, request: Ping | DiagRequest | FixProposal) -> None:
        if isinstance(request, Ping):
            self.machine_reply(Result(reply_to=request.id, ok=True, produced_at=datetime.now(UTC)))
            return
        work = self._fix(request) if isinstance(request, FixProposal) else self._diagnose(request)
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _fix(self, proposal: FixProposal) -> None:
        from agent import fixes
        from protocol.calls.fixes import FixReport

        if self._fix_policy is None:
            self._fix_policy = fixes.FixPolicy(
                pinned_key=self.config.fix_key,
                ask=self.ask_fix,
                preapproved=frozenset(self.allow),
                unattended=frozenset(self.config.unattended),
                serial_file=self.home.path / "catalogue-serial",
                root_helper=self.config.root_helper,
            )

        async def emit(stream: str, data: str) -> None:
            if self.machine is not None and self.machine.state is AgentState.LIVE:
                self.machine.output(FixOutput(reply_to=proposal.id, stream=stream, data=data))
                with contextlib.suppress(Exception):
                    await self._flush()

        try:
            try:
                report = await fixes.run(proposal, self._fix_policy, emit)
                result = Result(
                    reply_to=proposal.id,
                    ok=True,
                    data=report.data(),
                    produced_at=datetime.now(UTC),
                )
            except fixes.Refused:
                raise
            except Exception as exc:
                # anything unforeseen is a refusal too: the controller must always hear
                # back, and the refusal must reach its audit log
                raise fixes.Refused("agent_error", f"{type(exc).__name__}: {exc}") from exc
        except fixes.Refused as refused:
            why = one_line(refused.message, 300)
            self.say(f"fix {one_line(proposal.fix_id, 48)} refused: {why}")
            result = Result(
                reply_to=proposal.id,
                ok=False,
                error=refused.message,
                data=FixReport(fix=proposal.fix_id, status="refused", code=refused.code).data(),
                produced_at=datetime.now(UTC),
            )
        self.home.outbox_put(proposal.id, codec.encode(result))
        self.machine_reply(result)
        with contextlib.suppress(Exception):
            await self._flush()

    async def _diagnose(self, request: DiagRequest) -> None:
        from agent.diagnostics import collect_snapshot

        try:
            if self.diag_delay:
                await asyncio.sleep(self.diag_delay)
            data = await asyncio.to_thread(
                collect_snapshot, request.collectors, controller_url=self.config.url
            )
            result = Result(reply_to=request.id, ok=True, data=data, produced_at=datetime.now(UTC))
        except Exception as exc:  # a broken collector is data, never a dead agent
            result = Result(
                reply_to=request.id,
                ok=False,
                error=f"{type(exc).__name__}: {exc}"[:1000],  # Result.error holds 2,000
                produced_at=datetime.now(UTC),
            )
        # durable before sent: a crash or a drop from here on cannot lose it
        self.home.outbox_put(request.id, codec.encode(result))
        self.machine_reply(result)
        with contextlib.suppress(Exception):
            await self._flush()


async def _never(_question: object) -> bool:
    """No way to ask the customer: a fix that needs their yes does not run."""
    return False


def _saved_expiry(saved: dict[str, Any]) -> datetime | None:
    """When the grant of a saved session ends, or None if the file does not say."""
    try:
        expires = datetime.fromisoformat(str(saved["expires_at"]))
    except (KeyError, ValueError):
        return None
    return expires if expires.tzinfo is not None else expires.replace(tzinfo=UTC)
